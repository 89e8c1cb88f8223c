"""Names can never make the store write outside its root, locally or on S3; credentials never sit in
a storage location.

First line: the spec refuses unsafe names (one line naming the field, exit 2 from the CLI). Second
line: the store itself refuses any sweep, variant or benchmark name that would leave its root, even
when called directly with names no spec would let through.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from typer.testing import CliRunner

from cluster.storage.uri import (
    StorageLocationError,
    join_inside,
    location_problem,
    open_location,
    redact,
    safe_part,
)
from cluster.variants.cache import VariantCache
from jobs.spec.load import parse_spec
from jobs.spec.schema import SpecError
from jobs.store.sweep import SweepStore
from tests.support.helpers import generation_row, write_sweep

#: Names that try to leave the store root, plainly or percent-encoded.
ESCAPES = [
    "..",
    "../evil",
    "a/../../evil",
    "/etc/evil",
    "a/b",
    "%2e%2e",
    "%2e%2e%2fevil",
    "..%2Fevil",
    "a%2Fb",
    "%252e%252e%252fevil",
    ".hidden",
    "a\\..\\evil",
    "ok\n",
]

BASE = {
    "name": "safe",
    "models": [{"name": "m", "source": "smollm2-135m"}],
    "recipes": [{"name": "ref", "method": "none"}],
    "benchmarks": [{"name": "xstest", "limit": 2}],
}


def _files_below(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------- first line: the spec
@pytest.mark.parametrize("bad", ["../evil", "/abs/evil", "a/b", "%2e%2e%2fevil", "a%2Fb", "..", "a..b"])
@pytest.mark.parametrize("where", ["name", "model", "recipe", "benchmark", "alias", "judge"])
def test_the_spec_refuses_names_that_could_leave_the_store(where: str, bad: str) -> None:
    spec = copy.deepcopy(BASE)
    field = {
        "name": lambda: spec.update(name=bad),
        "model": lambda: spec["models"][0].update(name=bad),
        "recipe": lambda: spec["recipes"][0].update(name=bad),
        "benchmark": lambda: spec["benchmarks"][0].update(name=bad),
        "alias": lambda: spec["benchmarks"][0].update(alias=bad),
        "judge": lambda: spec.update(judges=[{"name": bad, "kind": "rule"}]),
    }[where]
    field()
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    expected = {
        "name": "name",
        "model": "models[0].name",
        "recipe": "recipes[0].name",
        "benchmark": "benchmarks[0].name",
        "alias": "benchmarks[0].alias",
        "judge": "judges[0].name",
    }[where]
    assert any(p.startswith(f"{expected}: ") and "not a valid name" in p for p in caught.value.problems), (
        caught.value.problems
    )


def test_cli_names_the_field_and_exits_2_without_a_traceback(tmp_path: Path) -> None:
    from jobs.cli import app

    spec = copy.deepcopy(BASE)
    spec["name"] = "%2e%2e%2fevil"
    result = CliRunner().invoke(app, ["validate", str(write_sweep(tmp_path / "s.yaml", spec))])
    assert result.exit_code == 2, result.output
    assert "name: '%2e%2e%2fevil' is not a valid name" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------------------------- second line: the store
@pytest.mark.parametrize("bad", ESCAPES)
def test_safe_part_refuses_every_escape(bad: str) -> None:
    with pytest.raises(StorageLocationError, match="cannot name a folder"):
        safe_part(bad)


def test_join_inside_keeps_ordinary_names_and_refuses_the_rest() -> None:
    assert (
        join_inside("bkt/runs", "s1", "variant=m-ref/benchmark=xstest") == "bkt/runs/s1/variant=m-ref/benchmark=xstest"
    )
    assert join_inside("/data/runs", "a..b") == "/data/runs/a..b"  # dots inside a name are not a parent folder
    for bad in ("../x", "x/../../y", "%2e%2e/x", "/etc"):
        with pytest.raises(StorageLocationError):
            join_inside("bkt/runs", bad)


@pytest.mark.parametrize("bad", ESCAPES)
def test_a_local_store_refuses_unsafe_sweep_names_and_writes_nothing(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "root" / "runs"
    root.mkdir(parents=True)
    with pytest.raises(StorageLocationError):
        SweepStore(root, bad)
    assert _files_below(tmp_path) == set()


@pytest.mark.parametrize("bad", ESCAPES)
def test_a_local_store_refuses_unsafe_variant_and_benchmark_names(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "root" / "runs"
    store = SweepStore(root, "s")
    for variant, benchmark in ((bad, "xstest"), ("m-ref", bad)):
        with pytest.raises(StorageLocationError):
            store.commit_generations(variant, benchmark, [generation_row("k1", item_id="1")])
    assert _files_below(tmp_path) == set()
    # The same store still commits ordinary names (the refusal is about the names, not the store).
    path = store.commit_generations("m-ref", "xstest", [generation_row("k1", item_id="1")])
    assert Path(path).is_relative_to(root / "s") and store.scan().keys == {"k1"}


def test_variant_cache_keys_cannot_leave_its_root(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path / "variants")
    for bad in ("../" + "a" * 16, "%2e%2e%2f" + "a" * 16, "/" + "a" * 16):
        with pytest.raises(ValueError, match="lowercase hex"):
            cache.lookup(bad)


# --------------------------------------------------------------------------------------------- on S3
@pytest.mark.parametrize("bad", ["../evil", "%2e%2e%2fevil", "a%2Fb", "..", "a/b"])
def test_an_s3_store_refuses_unsafe_names_and_writes_nothing_outside_its_root(s3_server, bad: str) -> None:
    bucket = s3_server.create_bucket()
    root = f"s3://{bucket}/team/runs"
    with pytest.raises(StorageLocationError):
        SweepStore(root, bad)
    store = SweepStore(root, "s")
    for variant, benchmark in ((bad, "xstest"), ("m-ref", bad)):
        with pytest.raises(StorageLocationError):
            store.commit_generations(variant, benchmark, [generation_row("k1", item_id="1")])
    store.commit_generations("m-ref", "xstest", [generation_row("k2", item_id="1")])
    fs = open_location(f"s3://{bucket}").fs
    objects = [
        i.path for i in fs.get_file_info(pafs.FileSelector(bucket, recursive=True)) if i.type == pafs.FileType.File
    ]
    assert objects and all(
        p.startswith(f"{bucket}/team/runs/s/generations/variant=m-ref/benchmark=xstest/") for p in objects
    ), objects


# --------------------------------------------------------------------------------------------- credentials
@pytest.mark.parametrize(
    "uri",
    [
        "s3://AKIAXXX:topsecret@bkt/runs",
        "s3://bkt/runs?access_key=AKIAXXX&secret_key=topsecret",
        "gs://bkt/runs?token=topsecret",
        "s3://bkt/runs?session_token=topsecret",
    ],
)
def test_credentials_in_a_location_are_refused_and_never_shown(uri: str) -> None:
    problem = location_problem(uri, "storage.root")
    assert problem and problem.startswith("storage.root: ") and "environment" in problem
    assert "topsecret" not in problem and "topsecret" not in redact(uri)
    with pytest.raises(StorageLocationError) as caught:
        open_location(uri, "storage.root")
    assert "topsecret" not in str(caught.value)
    spec = copy.deepcopy(BASE)
    spec["storage"] = {"root": uri}
    with pytest.raises(SpecError) as refused:
        parse_spec(spec)
    assert "storage.root" in str(refused.value) and "topsecret" not in str(refused.value)


def test_an_endpoint_in_the_uri_is_kept_and_not_a_secret() -> None:
    uri = "s3://bkt/runs?endpoint_override=127.0.0.1:9000&scheme=http"
    assert location_problem(uri) is None
    assert redact(uri) == uri
    store = SweepStore(uri, "s1")
    assert store.uri == "s3://bkt/runs/s1?endpoint_override=127.0.0.1:9000&scheme=http"


def test_a_variant_cache_uri_with_credentials_stops_the_run_before_any_work(tmp_path, data_dir) -> None:
    """--variant-cache (like the spec's storage fields) may not carry credentials: exit 2, secret not shown."""
    from typer.testing import CliRunner

    from jobs.cli import app

    sweep = tmp_path / "vc.yaml"
    sweep.write_text(
        "name: vc\nmodels: [{name: m, source: smollm2-135m}]\nrecipes: [{name: ref, method: none}]\n"
        f"benchmarks: [{{name: xstest, limit: 2}}]\nstorage: {{root: {tmp_path / 'runs'}}}\n"
    )
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(sweep),
            "--data-dir",
            str(data_dir),
            "--variant-cache",
            "s3://AKIAEXAMPLE:TOPSECRETVALUE@bucket/variants",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "--variant-cache" in result.output and "credentials" in result.output
    assert "TOPSECRETVALUE" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # nothing was started
