"""The data fetcher, against a local HTTP server that serves a data folder (no internet)."""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from jobs.data_fetch import (
    SOURCES_FILE,
    DataFetchError,
    fetch,
    load_sources,
    source_url,
)

RAW_PREFIX = "https://raw.githubusercontent.com/"


class _Server:
    """A bounded local server of one folder; records the request paths it answered."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                server.requests.append(self.path)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.httpd.timeout = 5
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def served(data_dir: Path) -> Iterator[_Server]:
    with _Server(data_dir) as server:
        yield server


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _raw_table() -> dict:
    return yaml.safe_load(SOURCES_FILE.read_text(encoding="utf-8"))


# -- the table ----------------------------------------------------------------------------------


def test_table_lists_every_local_file_with_its_hash(data_dir: Path) -> None:
    local = {p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file() and p.name != "SOURCE.md"}
    table = _raw_table()
    listed = {f"{folder}/{entry['path']}": entry["sha256"] for folder, entries in table.items() for entry in entries}
    assert set(listed) == local
    assert set(table) == {p.name for p in data_dir.iterdir() if p.is_dir()}
    for relative, digest in listed.items():
        assert _sha256(data_dir / relative) == digest, relative


def test_table_urls_use_the_commits_pinned_in_source_md(data_dir: Path) -> None:
    for folder, entries in _raw_table().items():
        source_md = (data_dir / folder / "SOURCE.md").read_text(encoding="utf-8")
        pinned = set(re.findall(r"\b[0-9a-f]{40}\b", source_md))
        for entry in entries:
            url = entry["url"]
            assert url.startswith(RAW_PREFIX), url
            owner, repo, commit, *rest = url[len(RAW_PREFIX) :].split("/")
            assert commit in pinned, (folder, url)
            assert rest, url
            # the repository is the one SOURCE.md names (canonical or the fork copied from)
            assert f"{owner}/{repo}" in source_md, url


def test_known_hashes_from_source_md() -> None:
    table = {s.relative: s for entries in load_sources().values() for s in entries}
    assert (
        table["truthfulqa/TruthfulQA.csv"].sha256 == "b8d8ef1e12f98b4f2a9f47abc9765da0640b182b6c5d9b92f0c1a1f2f1e02e5c"
    )
    assert (
        table["xstest/xstest_prompts.csv"].sha256 == "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a"
    )
    assert table["truthfulqa/data/v1/mc_task.json"].url == (
        RAW_PREFIX + "sylinrl/TruthfulQA/d71c110897f5d31c5d7f309e7bc316c152f6f031/data/v1/mc_task.json"
    )
    assert table["decodingtrust/ood/style.json"].url.endswith(
        "AI-secure/DecodingTrust/161ae8321ced62f45fcd9ceb412e05b47c603cd4/data/ood/style.json"
    )


def test_base_url_replaces_origin_repo_and_commit() -> None:
    source = next(s for s in load_sources()["decodingtrust"] if "gpt3.n=25" in s.path)
    assert source_url(source) == source.url
    assert source_url(source, "http://mirror/x/") == (
        "http://mirror/x/decodingtrust/toxicity/user_prompts/toxic.jsonl.gpt3.n%3D25.out1.split.annotated.jsonl.filtered.jsonl"
    )


# -- fetching -----------------------------------------------------------------------------------


def test_fetch_downloads_then_skips(served: _Server, data_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    report = fetch(["xstest", "truthfulqa"], dest, base_url=served.url, timeout=10)
    expected = sorted(
        p.relative_to(data_dir).as_posix()
        for folder in ("xstest", "truthfulqa")
        for p in (data_dir / folder).rglob("*")
        if p.is_file() and p.name != "SOURCE.md"
    )
    assert sorted(report.downloaded) == expected
    assert report.skipped == [] and report.replaced == []
    assert report.bytes_downloaded == sum((data_dir / r).stat().st_size for r in expected)
    for relative in expected:
        assert (dest / relative).read_bytes() == (data_dir / relative).read_bytes()
    assert not list(dest.rglob("*.part"))
    n_requests = len(served.requests)
    assert n_requests == len(expected)

    again = fetch(["truthfulqa"], dest, base_url=served.url, timeout=10)
    assert again.downloaded == []
    assert sorted(again.skipped) == [r for r in expected if r.startswith("truthfulqa/")]
    assert len(served.requests) == n_requests  # nothing was requested


def test_fetch_replaces_a_corrupted_local_file(served: _Server, data_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "xstest" / "xstest_prompts.csv"
    target.parent.mkdir(parents=True)
    target.write_text("not the data\n")
    report = fetch(["xstest"], tmp_path, base_url=served.url, timeout=10)
    assert report.replaced == ["xstest/xstest_prompts.csv"]
    assert "xstest/xstest_prompts.csv" in report.downloaded
    assert target.read_bytes() == (data_dir / "xstest" / "xstest_prompts.csv").read_bytes()


def test_hash_mismatch_names_file_and_hashes_and_keeps_nothing(data_dir: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(data_dir / "xstest", mirror / "xstest")
    bad = mirror / "xstest" / "xstest_prompts.csv"
    bad.write_bytes(bad.read_bytes() + b"tampered\n")
    bad_hash = _sha256(bad)
    good_hash = _sha256(data_dir / "xstest" / "xstest_prompts.csv")
    dest = tmp_path / "dest"
    with _Server(mirror) as server, pytest.raises(DataFetchError) as caught:
        fetch(["xstest"], dest, base_url=server.url, timeout=10)
    message = str(caught.value)
    assert "xstest/xstest_prompts.csv" in message
    assert good_hash in message and bad_hash in message
    assert not (dest / "xstest" / "xstest_prompts.csv").exists()
    assert not list(dest.rglob("*.part"))


def test_missing_remote_file_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with _Server(empty) as server, pytest.raises(DataFetchError, match=r"could not download xstest/.*404"):
        fetch(["xstest"], tmp_path / "dest", base_url=server.url, timeout=10)
    assert not [p for p in (tmp_path / "dest").rglob("*") if p.is_file()]


def test_unknown_name_lists_available(tmp_path: Path) -> None:
    with pytest.raises(DataFetchError) as caught:
        fetch(["xstest", "no-such-benchmark"], tmp_path)
    message = str(caught.value)
    assert "'no-such-benchmark'" in message
    for folder in load_sources():
        assert folder in message
    assert not any(tmp_path.iterdir())  # nothing fetched before the check


def test_every_builtin_source_folder_can_be_fetched() -> None:
    from trust.benchmarks.catalog import BENCHMARKS

    table = load_sources()
    folders = {d.source_folder for d in BENCHMARKS.values() if d.source_folder}
    assert "truthfulqa" in folders
    assert folders <= set(table), sorted(folders - set(table))
