"""Broken sweep files and unusable storage roots through the real command line: each is one line
naming the file (or field) and the fix, exit 2, never a Python traceback (issue 24, "bad input")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from jobs.cli import app
from jobs.tracking.shared_view import view_key
from tests.support.helpers import sweep_dict

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def sweep_text(model_dir: Path, tmp_path: Path) -> str:
    """A valid sweep (one benchmark, to keep the data checks short) as YAML text."""
    spec = sweep_dict(model_dir, tmp_path / "runs", benchmarks=[{"name": "xstest", "limit": 4}], ensembles=[])
    return yaml.safe_dump(spec, sort_keys=False)


def _cli(*args: str) -> tuple[int, list[str]]:
    """Run ``qtrust ARGS`` in this process: the exit code and the non-empty output lines."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"qtrust {' '.join(args)} raised {result.exception!r}") from result.exception
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


def _one_error_line(code: int, lines: list[str], *expected: str) -> str:
    assert code == 2, lines
    assert len(lines) == 1, lines
    (line,) = lines
    assert line.startswith("error: ") and "Traceback" not in line
    for text in expected:
        assert text in line, line
    return line


def _alias_bomb() -> str:
    """``models[0].engine_options`` of nine aliases nine levels deep: 9**9 values once expanded."""
    lines = ['    lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        lines.append(f"    lol{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "  engine_options:\n" + "\n".join(lines) + "\n"


def _with_model_field(text: str, block: str) -> str:
    """``text`` with ``block`` (indented under the first model) added to the first model."""
    head, sep, rest = text.partition("  source: ")
    line, newline, tail = rest.partition("\n")
    return head + sep + line + newline + block + tail


@pytest.mark.parametrize("command", ["validate", "run", "plan"])
def test_binary_garbage_is_one_line_saying_not_utf8(command: str, tmp_path: Path) -> None:
    path = tmp_path / "garbage.yaml"
    path.write_bytes(bytes(range(256)) * 8)
    line = _one_error_line(*_cli(command, str(path)), str(path), "not UTF-8 text")
    assert "save it as UTF-8" in line


def test_latin1_text_names_the_byte(sweep_text: str, tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(sweep_text.replace("name: t", "name: t\ndescription: caf\xe9", 1).encode("latin-1"))
    _one_error_line(*_cli("validate", str(path)), str(path), "not UTF-8 text (byte 0xe9")


def test_a_file_far_too_big_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(40 * 2**20)  # sparse: costs no disk
    _one_error_line(*_cli("validate", str(path)), str(path), "40 MiB, more than any qtrust YAML file needs")


def test_deep_nesting_is_refused_at_the_depth_limit(sweep_text: str, tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(sweep_text + "description: " + "[" * 20_000 + "]" * 20_000 + "\n")
    _one_error_line(*_cli("validate", str(path)), str(path), "nested more than 100 levels deep")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_alias_bomb_in_engine_options_is_refused_before_it_expands(
    command: str, sweep_text: str, tmp_path: Path
) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_with_model_field(sweep_text, _alias_bomb()))
    _one_error_line(*_cli(command, str(path)), str(path), "alias bomb", "10,000")


def test_an_alias_inside_its_own_anchor_is_refused(sweep_text: str, tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(_with_model_field(sweep_text, "  engine_options: &opts {again: *opts}\n"))
    _one_error_line(*_cli("validate", str(path)), str(path), "refers to the anchor that contains it")


def test_a_few_shared_aliases_and_merges_still_load(sweep_text: str, tmp_path: Path) -> None:
    from jobs.spec.load import load_spec

    path = tmp_path / "shared.yaml"
    text = sweep_text.replace("limit: 4", "limit: &size 4", 1).replace("shard_size: 4", "shard_size: *size", 1)
    path.write_text(text + "generation:\n  <<: {temperature: 0.5, max_new_tokens: 3}\n  temperature: 0.0\n")
    spec = load_spec(path)
    assert spec.shard_size == spec.benchmarks[0].limit == 4
    assert (spec.generation.temperature, spec.generation.max_new_tokens) == (0.0, 3)


def test_a_duplicate_key_names_the_key_and_both_lines(sweep_text: str, tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    text = sweep_text + "shard_size: 8\n"  # sweep_dict already sets shard_size
    path.write_text(text)
    first = 1 + text.splitlines().index("shard_size: 4")
    last = len(text.splitlines())
    _one_error_line(
        *_cli("validate", str(path)),
        str(path),
        f"line {last}: key 'shard_size' appears twice in one mapping (first on line {first})",
    )


def test_a_duplicate_key_in_a_judges_file_and_a_stored_sweep(sweep_text: str, tmp_path: Path) -> None:
    judges = tmp_path / "judges.yaml"
    judges.write_text("- name: a\n  kind: rule\n  kind: model\n")
    _one_error_line(*_cli("judge-eval", "--judge", "a", "--judges-file", str(judges)), "line 3: key 'kind'")
    stored = tmp_path / "runs" / "t"
    stored.mkdir(parents=True)
    (stored / "sweep.yaml").write_text(sweep_text + "name: u\n")
    _one_error_line(*_cli("resume", str(stored)), "sweep.yaml", "key 'name' appears twice")


def test_a_model_source_longer_than_the_filesystem_allows(sweep_text: str, tmp_path: Path) -> None:
    path = tmp_path / "long.yaml"
    path.write_text(sweep_text.replace("  source: ", "  source: " + "a/" * 3000 + "x-", 1))
    _one_error_line(*_cli("validate", str(path)), "models[0].source:", "cannot be looked up (File name too long)")


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("/proc/qtrust-runs", "is under /proc, the kernel's own file system"),
        ("{tmp}/a-file/runs", "is a file, not a folder"),
    ],
)
def test_validate_refuses_a_storage_root_that_cannot_take_files(
    root: str, expected: str, sweep_text: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("x")
    root = root.format(tmp=tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(sweep_text.replace(f"root: {tmp_path / 'runs'}", f"root: {root}"))
    line = _one_error_line(*_cli("validate", str(path)), str(path), "storage.root:", expected)
    assert "point storage.root (or --storage-root) at a folder you can write" in line


def test_validate_leaves_no_folder_behind(sweep_text: str, tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(sweep_text.replace(f"root: {tmp_path / 'runs'}", f"root: {tmp_path / 'new' / 'runs'}"))
    code, lines = _cli("validate", str(path))
    assert code == 0, lines
    assert not (tmp_path / "new").exists()


def test_run_checks_the_storage_root_before_any_work(sweep_text: str, tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(sweep_text)
    _one_error_line(*_cli("run", str(path), "--storage-root", "/proc/qtrust-runs"), "storage.root:", "/proc")
    (tmp_path / "runs").mkdir()
    os.chmod(tmp_path / "runs", 0o500)
    try:
        if os.access(tmp_path / "runs", os.W_OK):  # root writes anywhere: no permission to deny
            return
        _one_error_line(*_cli("run", str(path)), "storage.root:", "permission denied")
    finally:
        os.chmod(tmp_path / "runs", 0o700)


def _private_mount_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.parametrize(
    ("mount", "expected"),
    [
        ("mount -t tmpfs -o ro,size=1m tmpfs $M", "(read-only file system)"),
        # a full disk: a 64 KiB tmpfs filled up before qtrust starts
        (
            "mount -t tmpfs -o size=64k tmpfs $M && (head -c 1048576 /dev/zero > $M/fill 2>/dev/null; true)",
            "(the disk is full",
        ),
    ],
)
def test_validate_on_a_read_only_or_full_mount_through_the_entry_point(
    mount: str, expected: str, sweep_text: str, tmp_path: Path
) -> None:
    # Deliberately a failure, not a skip: CI (root, util-linux) has `unshare -rm`; elsewhere say what is missing.
    assert _private_mount_works(), "this test mounts a tmpfs in a private mount namespace: it needs `unshare -rm`"
    target = tmp_path / "mnt"
    target.mkdir()
    path = tmp_path / "s.yaml"
    path.write_text(sweep_text.replace(f"root: {tmp_path / 'runs'}", f"root: {target / 'runs'}"))
    script = f'M="{target}"; {mount} && exec "{sys.executable}" -m jobs validate "{path}"'
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "storage.root:" in line and expected in line, line


def test_trust_remote_code_is_a_warning_naming_the_model(sweep_text: str, tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(_with_model_field(sweep_text, "  trust_remote_code: true\n"))
    code, lines = _cli("validate", str(path))
    assert code == 0, lines
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "models[0] (tiny): trust_remote_code is true" in warnings[0]
    path.write_text(sweep_text)
    assert not [line for line in _cli("validate", str(path))[1] if "trust_remote_code" in line]


def test_the_shared_view_key_differs_per_storage_root_and_is_stable() -> None:
    a, b = view_key("demo", "/data/a/demo"), view_key("demo", "/data/b/demo")
    assert a != b
    assert a == view_key("demo", "/data/a/demo")  # a resume finds the same view
    assert a.startswith("qtrust-demo-") and b.startswith("qtrust-demo-")


def test_the_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "garbage.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    proc = subprocess.run(
        [sys.executable, "-m", "jobs", "validate", str(path)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"error: {path}: not UTF-8 text (byte 0x89 at offset 0); save it as UTF-8 (a YAML file, not a binary)"
    ]
