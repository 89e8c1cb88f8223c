"""`qtrust benchmarks list/show` and `qtrust data fetch` through the real command line."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

from typer.testing import CliRunner

from jobs.cli import app
from trust.benchmarks import BENCHMARKS

runner = CliRunner()


def test_list_names_every_built_in_benchmark() -> None:
    result = runner.invoke(app, ["benchmarks", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in BENCHMARKS:
        assert name in result.output


def test_show_flags_a_non_commercial_license_and_renders_an_item(data_dir: Path) -> None:
    result = runner.invoke(app, ["benchmarks", "show", "do_not_answer", "--data-dir", str(data_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "license note:" in result.output and "non-commercial" in result.output.lower()
    assert "items: 939" in result.output


def test_show_unknown_benchmark_fails_cleanly() -> None:
    result = runner.invoke(app, ["benchmarks", "show", "nope"])
    assert result.exit_code == 2
    assert "Available benchmarks" in result.output


def test_data_fetch_from_a_local_mirror(data_dir: Path, tmp_path: Path) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(data_dir))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        result = runner.invoke(app, ["data", "fetch", "xstest", "--dest", str(tmp_path), "--base-url", base])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "xstest" / "xstest_prompts.csv").read_bytes() == (data_dir / "xstest" / "xstest_prompts.csv").read_bytes()
        again = runner.invoke(app, ["data", "fetch", "xstest", "--dest", str(tmp_path), "--base-url", base])
        assert "0 downloaded" in again.output
    finally:
        server.shutdown()
        server.server_close()
