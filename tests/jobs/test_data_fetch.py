"""The data fetcher, against a local HTTP server that serves a data folder (no internet)."""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from jobs.data_fetch import (
    NOT_FETCHABLE,
    SOURCES_FILE,
    TRANSFORMS,
    DataFetchError,
    fetch,
    load_sources,
    source_url,
)
from tests.support.file_server import FileServer as _Server

RAW_PREFIX = "https://raw.githubusercontent.com/"


@pytest.fixture
def served(data_dir: Path) -> Iterator[_Server]:
    with _Server(data_dir) as server:
        yield server


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _raw_table() -> dict:
    return yaml.safe_load(SOURCES_FILE.read_text(encoding="utf-8"))


# -- the table ----------------------------------------------------------------------------------


def _entry_urls(entry: dict) -> list[str]:
    """Every URL an entry downloads from (its own, its archive's)."""
    return [url for url in (entry.get("url"), (entry.get("archive") or {}).get("url")) if url]


def _normalized(text: str) -> str:
    """Markdown text without emphasis or code marks, whitespace collapsed (to find quotes in it)."""
    return " ".join(text.replace("**", "").replace("`", "").split())


def test_table_lists_every_local_file_with_its_hash(data_dir: Path) -> None:
    local = {p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file() and p.name != "SOURCE.md"}
    table = _raw_table()
    entries = {f"{folder}/{entry['path']}": entry for folder, listed in table.items() for entry in listed}
    listed = {relative: entry["sha256"] for relative, entry in entries.items()}
    assert local <= set(listed), sorted(local - set(listed))
    # only an optional entry whose sha256 is unknown (null) may be missing here
    unverified = {relative for relative, digest in listed.items() if digest is None}
    assert set(listed) - local <= unverified, sorted(set(listed) - local - unverified)
    for relative in unverified:
        assert relative not in local, f"{relative} is present: pin its sha256"
        assert entries[relative].get("optional") is True and entries[relative].get("reason"), relative
    assert set(table) == {p.name for p in data_dir.iterdir() if p.is_dir()}
    for relative in local:
        assert _sha256(data_dir / relative) == listed[relative], relative


def test_table_urls_use_the_commits_pinned_in_source_md(data_dir: Path) -> None:
    for folder, entries in _raw_table().items():
        source_md = (data_dir / folder / "SOURCE.md").read_text(encoding="utf-8")
        pinned = set(re.findall(r"\b[0-9a-f]{40}\b", source_md))
        for entry in entries:
            urls = _entry_urls(entry)
            if entry.get("fetch") == "none":
                assert not urls and entry["reason"], entry
                continue
            assert urls, entry
            for url in urls:
                if not url.startswith(RAW_PREFIX):
                    # only an unverified file may come from its authors' own host, which SOURCE.md names
                    host = url.split("/")[2]
                    assert entry.get("optional") and entry.get("sha256") is None and host in source_md, url
                    continue
                owner, repo, commit, *rest = url[len(RAW_PREFIX) :].split("/")
                assert commit in pinned, (folder, url)
                assert rest, url
                # the repository is the one SOURCE.md names (canonical or the fork copied from)
                assert f"{owner}/{repo}" in source_md, url


def test_reasons_quote_source_md(data_dir: Path) -> None:
    """A not-fetchable or unverified entry says why, quoting its folder's SOURCE.md word for word."""
    reasons = 0
    for folder, entries in _raw_table().items():
        source_md = _normalized((data_dir / folder / "SOURCE.md").read_text(encoding="utf-8"))
        for entry in entries:
            if "reason" not in entry:
                continue
            reasons += 1
            assert "\n" not in entry["reason"], entry
            quotes = re.findall(r'"([^"]+)"', entry["reason"])
            assert quotes, entry["reason"]
            for quote in quotes:
                assert _normalized(quote) in source_md, (folder, quote)
    assert reasons >= 2


def test_new_folders_hashes_are_the_ones_source_md_gives(data_dir: Path) -> None:
    """For folders whose SOURCE.md lists every sha256, the table's (files, archives, sources) are among them."""
    table = _raw_table()
    for folder in ("mmlu", "safetybench", "hotpotqa", "xsafety"):
        source_md = (data_dir / folder / "SOURCE.md").read_text(encoding="utf-8")
        for entry in table[folder]:
            digests = [entry["sha256"], entry.get("source_sha256"), (entry.get("archive") or {}).get("sha256")]
            for digest in filter(None, digests):
                assert digest in source_md, (folder, entry["path"], digest)


def test_entry_forms_of_the_new_folders() -> None:
    table = load_sources()
    forms = {folder: Counter(s.form if s.sha256 else "unverified" for s in table[folder]) for folder in table}
    assert forms["mmlu"] == {"archive": 114, "url": 1}
    assert forms["safetybench"] == {"url": 2, "transform": 1, "unverified": 1}
    assert forms["hotpotqa"] == {"url": 1, "none": 1, "unverified": 1}
    assert forms["xsafety"] == {"url": 15}
    by_path = {s.relative: s for entries in table.values() for s in entries}
    member = by_path["mmlu/test/abstract_algebra_test.csv"]
    assert member.archive is not None and member.archive.member == "data/test/abstract_algebra_test.csv"
    assert member.archive.url == (
        RAW_PREFIX + "hiyouga/LLaMA-Factory/465ee8119aa489a41bee0b01b3c105a2f3dd137f/evaluation/mmlu/mmlu.zip"
    )
    assert member.archive.sha256 == "9e2b2d78bf59d80baf271a13005568ef0aca17bd663f2e5ebfecdc07a68f0edc"
    dev = by_path["safetybench/dev_en.json"]
    assert dev.transform == "crlf_to_lf"
    assert dev.source_sha256 == "f31a16eb4845df902b8373320c8d6777c630a44a7cd0067e622f5f98f90bbbea"
    test_en = by_path["safetybench/test_en.json"]
    assert test_en.sha256 is None and test_en.optional
    assert test_en.url == (
        RAW_PREFIX + "thu-coai/SafetyBench/960833692a1ec82b191ff3e902daca7993c35cc1/opensource_data/test_en.json"
    )
    assert not by_path["hotpotqa/hotpot_dev_distractor_first100.json"].fetchable


def test_the_dev_set_transformation_is_reproducible(data_dir: Path) -> None:
    """SOURCE.md's mirror blob is the local dev_en.json with LF turned back into CRLF (it has no bare CR or CRLF)."""
    source = next(s for s in load_sources()["safetybench"] if s.path == "dev_en.json")
    local = (data_dir / "safetybench" / "dev_en.json").read_bytes()
    assert b"\r" not in local
    upstream = local.replace(b"\n", b"\r\n")
    assert hashlib.sha256(upstream).hexdigest() == source.source_sha256
    assert TRANSFORMS["crlf_to_lf"](upstream) == local


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


# -- the entry forms, against a local origin server and a table written for it ------------------


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_table(tmp_path: Path, folders: dict) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(folders, sort_keys=False), encoding="utf-8")
    return path


def _files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


MEMBERS = {"data/a.csv": b"q,A\r\nr,B", "data/sub/b.csv": b"x,y\n"}


def _zip_origin(tmp_path: Path) -> Path:
    origin = tmp_path / "origin"
    origin.mkdir()
    with zipfile.ZipFile(origin / "pkg.zip", "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for name, data in MEMBERS.items():
            zipped.writestr(name, data)
        zipped.writestr("data/not_taken.txt", b"left in the archive")
    return origin


def _member_entry(server: _Server, origin: Path, path: str, member: str, **changes: object) -> dict:
    entry = {
        "path": path,
        "sha256": _digest(MEMBERS.get(member, b"")),
        "archive": {"url": f"{server.url}/pkg.zip", "sha256": _sha256(origin / "pkg.zip"), "member": member},
    }
    for key, value in changes.items():
        if key.startswith("archive_"):
            entry["archive"][key[len("archive_") :]] = value
        else:
            entry[key] = value
    return entry


def test_archive_members_are_extracted_from_one_download(tmp_path: Path) -> None:
    origin = _zip_origin(tmp_path)
    dest = tmp_path / "dest"
    with _Server(origin) as server:
        table = _write_table(
            tmp_path,
            {
                "pkg": [
                    _member_entry(server, origin, "a.csv", "data/a.csv"),
                    _member_entry(server, origin, "deep/b.csv", "data/sub/b.csv"),
                ]
            },
        )
        report = fetch(None, dest, sources=table, timeout=10, notify=pytest.fail)
        assert sorted(report.downloaded) == ["pkg/a.csv", "pkg/deep/b.csv"]
        assert server.requests == ["/pkg.zip"]  # the archive once, for both members
        assert report.bytes_downloaded == (origin / "pkg.zip").stat().st_size
        assert (dest / "pkg" / "a.csv").read_bytes() == MEMBERS["data/a.csv"]  # bytes as stored, CRLF kept
        assert (dest / "pkg" / "deep" / "b.csv").read_bytes() == MEMBERS["data/sub/b.csv"]
        assert _files_under(dest) == ["pkg/a.csv", "pkg/deep/b.csv"]  # no archive, no .part left behind
        assert sorted(p.name for p in dest.iterdir()) == ["pkg"]

        again = fetch(None, dest, sources=table, timeout=10, notify=pytest.fail)
        assert again.downloaded == [] and sorted(again.skipped) == ["pkg/a.csv", "pkg/deep/b.csv"]
        assert server.requests == ["/pkg.zip"]  # all present: the archive is not downloaded again

        (dest / "pkg" / "a.csv").write_bytes(b"corrupted")
        third = fetch(None, dest, sources=table, timeout=10, notify=pytest.fail)
        assert third.replaced == ["pkg/a.csv"] and third.skipped == ["pkg/deep/b.csv"]
        assert (dest / "pkg" / "a.csv").read_bytes() == MEMBERS["data/a.csv"]


def test_archive_with_a_wrong_hash_is_refused(tmp_path: Path) -> None:
    origin = _zip_origin(tmp_path)
    dest = tmp_path / "dest"
    wrong = "0" * 64
    with _Server(origin) as server:
        entry = _member_entry(server, origin, "a.csv", "data/a.csv", archive_sha256=wrong)
        table = _write_table(tmp_path, {"pkg": [entry]})
        with pytest.raises(DataFetchError) as caught:
            fetch(None, dest, sources=table, timeout=10, notify=pytest.fail)
    message = str(caught.value)
    assert "the archive" in message and f"{server.url}/pkg.zip" in message and "pkg/a.csv" in message
    assert wrong in message and _sha256(origin / "pkg.zip") in message
    assert _files_under(dest) == [] and list(dest.iterdir()) == []  # no file, no archive folder


def test_archive_member_with_a_wrong_hash_is_refused(tmp_path: Path) -> None:
    origin = _zip_origin(tmp_path)
    dest = tmp_path / "dest"
    wrong = "f" * 64
    with _Server(origin) as server:
        table = _write_table(tmp_path, {"pkg": [_member_entry(server, origin, "a.csv", "data/a.csv", sha256=wrong)]})
        with pytest.raises(DataFetchError) as caught:
            fetch(None, dest, sources=table, timeout=10, notify=pytest.fail)
    message = str(caught.value)
    assert "sha256 mismatch for pkg/a.csv (member data/a.csv of" in message
    assert wrong in message and _digest(MEMBERS["data/a.csv"]) in message and "not kept" in message
    assert _files_under(dest) == []


def test_archive_without_the_member_is_a_clear_error(tmp_path: Path) -> None:
    origin = _zip_origin(tmp_path)
    with _Server(origin) as server:
        table = _write_table(tmp_path, {"pkg": [_member_entry(server, origin, "a.csv", "data/missing.csv")]})
        with pytest.raises(
            DataFetchError, match=r"pkg/a\.csv: the archive .*pkg\.zip has no member 'data/missing\.csv'"
        ):
            fetch(None, tmp_path / "dest", sources=table, timeout=10, notify=pytest.fail)
    assert _files_under(tmp_path / "dest") == []


CRLF_SOURCE = b"one\r\ntwo\r\na bare\rCR stays\r\n"
CRLF_RESULT = b"one\ntwo\na bare\rCR stays\n"


def _transform_entry(server: _Server, **changes: object) -> dict:
    entry = {
        "path": "text.json",
        "url": f"{server.url}/crlf.json",
        "source_sha256": _digest(CRLF_SOURCE),
        "transform": "crlf_to_lf",
        "sha256": _digest(CRLF_RESULT),
    }
    entry.update(changes)
    return entry


def test_crlf_to_lf_checks_the_source_then_the_result(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "crlf.json").write_bytes(CRLF_SOURCE)
    dest = tmp_path / "dest"
    with _Server(origin) as server:
        table = _write_table(tmp_path, {"pkg": [_transform_entry(server)]})
        report = fetch(None, dest, sources=table, timeout=10, notify=pytest.fail)
        assert report.downloaded == ["pkg/text.json"] and report.bytes_downloaded == len(CRLF_SOURCE)
        assert (dest / "pkg" / "text.json").read_bytes() == CRLF_RESULT
        assert fetch(None, dest, sources=table, timeout=10, notify=pytest.fail).skipped == ["pkg/text.json"]

        # the source is not the one SOURCE.md names: refused before transforming
        bad_source = _write_table(tmp_path, {"pkg": [_transform_entry(server, source_sha256="1" * 64)]})
        with pytest.raises(DataFetchError) as caught:
            fetch(None, tmp_path / "d2", sources=bad_source, timeout=10, notify=pytest.fail)
        message = str(caught.value)
        assert "the source of pkg/text.json" in message and "before crlf_to_lf" in message
        assert "1" * 64 in message and _digest(CRLF_SOURCE) in message

        # the transformation does not give the pinned bytes: refused after transforming
        bad_result = _write_table(tmp_path, {"pkg": [_transform_entry(server, sha256="2" * 64)]})
        with pytest.raises(DataFetchError) as caught:
            fetch(None, tmp_path / "d3", sources=bad_result, timeout=10, notify=pytest.fail)
        message = str(caught.value)
        assert "pkg/text.json" in message and "after crlf_to_lf" in message
        assert "2" * 64 in message and _digest(CRLF_RESULT) in message
    assert not (tmp_path / "d2").exists() or _files_under(tmp_path / "d2") == []
    assert not (tmp_path / "d3").exists() or _files_under(tmp_path / "d3") == []


BUILT = b'{"built": "here"}\n'
REASON = 'built here from two repositories; SOURCE.md: "made by hand"'


def test_not_fetchable_is_reported_never_downloaded_and_a_local_copy_kept(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    (origin / "pkg").mkdir(parents=True)
    (origin / "pkg" / "built.json").write_bytes(BUILT)  # even a mirror that has it is not asked
    (origin / "pkg" / "plain.txt").write_bytes(b"plain\n")
    dest = tmp_path / "dest"
    target = dest / "pkg" / "built.json"
    with _Server(origin) as server:
        table = _write_table(
            tmp_path,
            {
                "pkg": [
                    {"path": "built.json", "sha256": _digest(BUILT), "fetch": "none", "reason": REASON},
                    {"path": "plain.txt", "url": f"{server.url}/pkg/plain.txt", "sha256": _digest(b"plain\n")},
                ]
            },
        )
        for base_url in (None, server.url):
            notes: list[str] = []
            report = fetch(None, dest, base_url=base_url, sources=table, timeout=10, notify=notes.append)
            assert report.not_fetchable == {"pkg/built.json": "missing"}
            assert not target.exists()
            assert len(notes) == 1 and notes == report.notes
            assert notes[0].startswith(f"pkg/built.json: {NOT_FETCHABLE} (")
            assert REASON in notes[0] and "no local copy" in notes[0]
        assert not any("built.json" in r for r in server.requests)
        assert report.files == 2

        target.write_bytes(BUILT)
        notes = []
        report = fetch(None, dest, sources=table, timeout=10, notify=notes.append)
        assert report.not_fetchable == {"pkg/built.json": "present"}
        assert NOT_FETCHABLE in notes[0] and "kept, sha256 ok" in notes[0]
        assert target.read_bytes() == BUILT

        target.write_bytes(b"edited locally\n")
        notes = []
        report = fetch(None, dest, sources=table, timeout=10, notify=notes.append)
        assert report.not_fetchable == {"pkg/built.json": "mismatch"}
        assert NOT_FETCHABLE in notes[0] and "kept as it is" in notes[0]
        assert _digest(b"edited locally\n") in notes[0] and _digest(BUILT) in notes[0]
        assert target.read_bytes() == b"edited locally\n"  # never deleted nor overwritten
        assert not any("built.json" in r for r in server.requests)


def test_source_url_of_a_not_fetchable_file_is_an_error() -> None:
    source = next(s for s in load_sources()["hotpotqa"] if not s.fetchable)
    with pytest.raises(DataFetchError, match=NOT_FETCHABLE):
        source_url(source)


def test_unverified_optional_file_is_downloaded_and_its_hash_printed(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "maybe.json").write_bytes(b"[1, 2, 3]\n")
    digest = _digest(b"[1, 2, 3]\n")
    dest = tmp_path / "dest"
    reason = "not verified: not obtainable when the table was written"
    with _Server(origin) as server:
        entry = {"path": "maybe.json", "url": f"{server.url}/maybe.json", "sha256": None, "optional": True}
        table = _write_table(tmp_path, {"pkg": [{**entry, "reason": reason}]})
        notes: list[str] = []
        report = fetch(None, dest, sources=table, timeout=10, notify=notes.append)
        assert report.downloaded == ["pkg/maybe.json"] and report.unverified == {"pkg/maybe.json": digest}
        assert notes == [f"pkg/maybe.json: downloaded, sha256 {digest}, NOT verified (the table has none: {reason})"]
        assert (dest / "pkg" / "maybe.json").read_bytes() == b"[1, 2, 3]\n"

        notes = []
        again = fetch(None, dest, sources=table, timeout=10, notify=notes.append)
        assert again.downloaded == [] and again.skipped == ["pkg/maybe.json"]
        assert digest in notes[0] and "already present" in notes[0] and "NOT verified" in notes[0]
        assert server.requests.count("/maybe.json") == 1

        # an optional file that cannot be downloaded is reported, and the others are still fetched
        (origin / "other.txt").write_bytes(b"other\n")
        missing = {**entry, "path": "gone.json", "url": f"{server.url}/gone.json", "reason": reason}
        other = {"path": "other.txt", "url": f"{server.url}/other.txt", "sha256": _digest(b"other\n")}
        table = _write_table(tmp_path, {"pkg": [missing, other]})
        notes = []
        report = fetch(None, dest, sources=table, timeout=10, notify=notes.append)
        assert list(report.optional_failed) == ["pkg/gone.json"] and "404" in report.optional_failed["pkg/gone.json"]
        assert report.downloaded == ["pkg/other.txt"]
        assert len(notes) == 1 and notes[0].startswith("pkg/gone.json: optional, not downloaded: could not download")
        assert not (dest / "pkg" / "gone.json").exists()


H = "a" * 64


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "x", "url": "u", "sha256": None}, "sha256 is null"),
        ({"path": "x", "url": "u", "sha256": None, "optional": True}, "match no entry form"),
        ({"path": "x", "url": "u", "sha256": H, "optional": True, "reason": "r"}, "optional: true is for a file"),
        ({"path": "x", "sha256": H, "fetch": "none"}, "match no entry form"),
        ({"path": "x", "sha256": H, "fetch": "later", "reason": "r"}, "fetch must be 'none'"),
        ({"path": "x", "sha256": H, "fetch": "none", "reason": " "}, "reason must be a non-empty string"),
        ({"path": "x", "url": "u", "sha256": H, "source_sha256": H, "transform": "gunzip"}, "unknown transform"),
        ({"path": "x", "url": "u", "sha256": H, "source_sha256": "zz", "transform": "crlf_to_lf"}, "source_sha256"),
        ({"path": "x", "sha256": H, "archive": {"url": "u", "sha256": H}}, "exactly url, sha256 and member"),
        ({"path": "x", "sha256": H, "archive": {"url": "u", "sha256": "no", "member": "m"}}, "archive.sha256"),
        ({"path": "../x", "url": "u", "sha256": H}, "must be relative"),
    ],
)
def test_malformed_entries_are_refused(tmp_path: Path, entry: dict, message: str) -> None:
    with pytest.raises(DataFetchError, match=re.escape(message)):
        load_sources(_write_table(tmp_path, {"pkg": [entry]}))


def test_a_path_listed_twice_is_refused(tmp_path: Path) -> None:
    entry = {"path": "x", "url": "u", "sha256": H}
    with pytest.raises(DataFetchError, match="lists x more than once"):
        load_sources(_write_table(tmp_path, {"pkg": [entry, entry]}))


NEW_FOLDERS = ["mmlu", "safetybench", "hotpotqa", "xsafety"]


def test_new_folders_from_a_mirror_of_the_data_folder(served: _Server, data_dir: Path, tmp_path: Path) -> None:
    """A mirror holds every file itself: archive members and transformed files come as they are, checked
    against their sha256; the not-fetchable file is still not downloaded; the optional one the mirror lacks
    is reported."""
    dest = tmp_path / "data"
    notes: list[str] = []
    report = fetch(NEW_FOLDERS, dest, base_url=served.url, timeout=10, notify=notes.append)
    local = [r for folder in NEW_FOLDERS for r in (f"{folder}/{p}" for p in _files_under(data_dir / folder))]
    built = "hotpotqa/hotpot_dev_distractor_first100.json"
    assert sorted(report.downloaded) == sorted(r for r in local if not r.endswith("SOURCE.md") and r != built)
    for relative in report.downloaded:
        assert (dest / relative).read_bytes() == (data_dir / relative).read_bytes()
    assert report.not_fetchable == {built: "missing"}
    assert sorted(report.optional_failed) == ["hotpotqa/hotpot_dev_distractor_v1.json", "safetybench/test_en.json"]
    assert len(notes) == 3  # the built file and the two optional ones the mirror lacks
    assert any(n.startswith(f"{built}: {NOT_FETCHABLE}") for n in notes)
    assert not any(built in r for r in served.requests)


def test_cli_reports_not_fetchable_files(served: _Server, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jobs.cli import app

    result = CliRunner().invoke(app, ["data", "fetch", "hotpotqa", "--dest", str(tmp_path), "--base-url", served.url])
    assert result.exit_code == 0, result.output
    assert f"hotpotqa/hotpot_dev_distractor_first100.json: {NOT_FETCHABLE}" in result.output
    assert "1 downloaded" in result.output
