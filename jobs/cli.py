"""The ``qtrust`` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from cluster.models.sources import ModelSourceError
from jobs.redacted_output import RedactingStream, standard_stream
from jobs.spec.load import load_spec
from jobs.spec.schema import SpecError
from trust.benchmarks.data import BenchmarkDataError

app = typer.Typer(
    help="qtrust: measure how quantization changes the trustworthiness and safety of LLMs.\n\n"
    "A sweep (YAML) crosses models × quantization recipes × benchmarks, plus precision ensembles. "
    "Results are Parquet shards under the storage root and MLflow runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Both consoles write through the one redactor: a URI's credentials never reach the screen (jobs/redacted_output.py).
console = Console(
    file=RedactingStream(standard_stream("stdout")),
    width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160,
)
# Not a terminal (a pipe, a CI log): messages are never wrapped, so a path or a fix is never cut in two.
err_console = Console(file=RedactingStream(standard_stream("stderr")), soft_wrap=not sys.stderr.isatty())

DATA_DIR_HELP = (
    "An offline copy of the benchmark data, one subfolder per source, e.g. xstest/ (default: $QTRUST_DATA_DIR; "
    "without either, the data cache ~/.cache/qtrust/data, filled on first use from the bundled files and the "
    "pinned sources)."
)
JUDGE_URL_HELP = (
    "NAME=URL: the real endpoint URL of the stored sweep's judge NAME, when it held credentials "
    "(the store keeps it masked, e.g. http://user:***@host/v1). Repeatable."
)
VERIFY_HELP = (
    "Read every stored shard and check it against the digest in its name, instead of taking the "
    "shards the scan index covers from the index (slower; finds files damaged after they were indexed)."
)
RESPONSE_CACHE_HELP = (
    "A folder or URI shared by sweeps: answers stored there with the same item key are reused "
    "(default: the spec's storage.response_cache)."
)
VARIANT_CACHE_HELP = (
    "Where quantized variants are kept: a folder shared by the cluster or an fsspec URL "
    "(default: $QTRUST_VARIANT_CACHE, the spec's storage.variant_cache, then <cache dir>/variants)."
)


def _fail(message: str, code: int = 2) -> None:
    from jobs.tracking.uri import redact

    err_console.print(f"[red]error:[/] {redact(message)}")  # a URI in a message never shows its credentials
    raise typer.Exit(code)


def _load(path: Path):
    try:
        return load_spec(path)
    except SpecError as err:
        _fail(str(err))


@app.command()
def validate(
    sweep: Path = typer.Argument(..., help="Sweep YAML file."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help=DATA_DIR_HELP + " Also checks every benchmark definition against its records."
    ),
) -> None:
    """Check a sweep file without starting Ray or loading a model (with data: the definitions against their records)."""
    spec = _load(sweep)
    _check_storage_root(sweep, spec.storage.root)
    _warn_remote_code(spec)
    data_lines = _check_benchmark_data(spec, data_dir)
    n = len(spec.variant_pairs())
    console.print(
        f"[green]ok[/]: {spec.name}: {len(spec.models)} model(s), {len(spec.recipes)} recipe(s) = {n} variant(s), "
        f"{len(spec.benchmarks)} benchmark(s), {len(spec.ensembles)} ensemble(s)"
    )
    from cluster.engines.selection import choose_engine

    for model, recipe in spec.variant_pairs():
        requested = spec.requested_engine(model, recipe)
        if requested in ("auto", "vllm"):
            choice = choose_engine(requested, recipe)
            console.print(f"  {spec.variant_name(model, recipe)}: engine {choice.engine} ({choice.reason})")
    for line in data_lines:
        console.print(line)


def _check_storage_root(sweep: Path, root: str) -> None:
    """Exit 2 with one line when no file can be written under the (local) storage root."""
    from cluster.storage.writable import writable_problem

    problem = writable_problem(root)
    if problem:
        _fail(f"{sweep}: {problem}")


def _warn_remote_code(spec) -> None:
    """A warning line per model whose folder's own Python code would run in the workers."""
    from jobs.spec.remote_code import remote_code_warnings

    for line in remote_code_warnings(spec):
        err_console.print(f"[yellow]warning:[/] {line}")


def _data_folder(data_dir: Path | None) -> Path | None:
    """--data-dir, else $QTRUST_DATA_DIR, else None (data checks skipped)."""
    if data_dir is not None:
        return data_dir
    env = os.environ.get("QTRUST_DATA_DIR")
    return Path(env) if env else None


def _check_benchmark_data(spec, data_dir: Path | None) -> list[str]:
    """Check every benchmark of ``spec`` against its records: exit 2 listing the problems, else the lines to show."""
    from jobs.spec.definitions import benchmark_problems

    folder = _data_folder(data_dir)
    if folder is not None and not folder.is_dir():
        _fail(f"--data-dir: {folder} is not a folder; pass an offline copy of the benchmark data (e.g. with xstest/)")
    unknown: set[str] = set()
    if folder is None:  # the data cache, filled on first use
        from jobs.data_ready import prepare_sweep_data

        try:
            ready = prepare_sweep_data(spec, None, notify=lambda line: err_console.print(line, markup=False))
        except BenchmarkDataError as err:
            _fail(str(err))
            return []
        unknown = ready.unknown
        folder = None if unknown else ready.folder
    problems, lines = benchmark_problems(spec, folder)
    if problems:
        _fail(f"{len(problems)} problem(s) in the benchmark definitions:\n" + "\n".join(f"  - {p}" for p in problems))
    if folder is None:
        from rich.markup import escape

        missing = f"{escape(', '.join(sorted(unknown)))} not in the data cache, the bundled files or the sources; "
        lines.append(
            "[yellow]data checks skipped[/]: "
            + (missing if unknown else "")
            + "pass --data-dir DIR (or set QTRUST_DATA_DIR) to check every definition "
            "against its records (templates, reference map, labels and attribute values metrics name)"
        )
    return lines


def _run(sweep_path: Path, options_kwargs: dict, resume_mode: bool = False, spec=None) -> None:
    spec = spec if spec is not None else _load(sweep_path)
    from cluster.storage.writable import StorageRootError
    from jobs.results.adaptive_view import print_adaptive
    from jobs.results.tables import print_perspectives, print_results, print_variants
    from jobs.run_summary import interrupted_line, resume_command, store_full_line, tracking_gap_line
    from jobs.runner import EXIT_INTERRUPTED, PlacementError, StoreFull, SweepInterrupted, run_sweep
    from jobs.spec.run_options import RunOptions
    from jobs.store.adaptive import read_adaptive
    from jobs.store.lock import SweepLockHeld
    from jobs.tracking import ui_command
    from jobs.tracking.uri import TrackingUriError, redact
    from trust.benchmarks.declarative import DefinitionError

    options = RunOptions(resume=resume_mode, **options_kwargs)
    try:
        outcome = run_sweep(spec, options, console)
    except (BenchmarkDataError, DefinitionError, ModelSourceError, SweepLockHeld, SpecError, TrackingUriError) as err:
        _fail(str(err))
        return
    except PlacementError as err:
        _fail(str(err))
        return
    except StorageRootError as err:  # a root no file can be written to, found before any work
        _fail(str(err))
        return
    except SweepInterrupted as stop:
        err_console.print(interrupted_line(stop.outcome, stop.aborted))
        err_console.print(f"Resume with:  [bold]{resume_command(stop.outcome.store.uri)}[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except StoreFull as full:  # exit 1: the run itself failed (the spec and command were right)
        err_console.print(redact(store_full_line(full)))
        raise typer.Exit(1) from None
    print_results(console, outcome.plan, outcome.results, outcome.comparison)
    print_perspectives(console, outcome.plan, outcome.results)
    print_adaptive(console, read_adaptive(outcome.store))
    print_variants(console, outcome.plan.variants, outcome.quant_reports)
    console.print(
        f"Items: {outcome.items_computed} computed in {outcome.computed} shard(s), {outcome.reused} already stored"
        + (f", {outcome.items_from_cache} from the response cache" if outcome.items_from_cache else "")
        + f"; {len(outcome.failed)} shard(s) failed. Stored under {outcome.store.uri}"
    )
    if outcome.plan.judges:
        console.print(
            f"Judgments: {outcome.judged} answer(s) judged by this run, {outcome.judgments_reused} already stored; "
            f"{len(outcome.judge_failed)} judge shard(s) failed"
            + (
                f"; {outcome.not_generated} item request(s) have no answer yet (run 'qtrust resume' to generate them)"
                if outcome.not_generated
                else ""
            )
        )
        for shard, error in sorted(outcome.judge_failed.items()):
            err_console.print(f"[red]failed[/] {shard}: {error.splitlines()[0][:300]}")
    if outcome.report_path:
        console.print(f"HTML report: {outcome.report_path}")
    gap = tracking_gap_line(outcome)
    if gap:  # the UI would show a partial sweep as if it were whole
        err_console.print(gap)
    elif outcome.experiment_id:
        console.print(
            f"MLflow: experiment '{spec.tracking.experiment}' (id {outcome.experiment_id}) at {redact(outcome.tracking_uri or '')}"
        )
        command = ui_command(outcome.tracking_uri or "")
        where = outcome.view_url or f"http://127.0.0.1:5000/#/experiments/{outcome.experiment_id}/runs"
        if command:
            console.print(f"Open the MLflow UI:  [bold]{command}[/]  then browse to {where}", soft_wrap=True)
        else:
            console.print(f"Open the MLflow UI at {where}", soft_wrap=True)
        console.print(
            "(runs grouped by benchmark with their metric columns; the parent run holds the plots, "
            "summary.json and report.html)"
        )
    if outcome.failed or outcome.judge_failed:
        for shard, error in sorted(outcome.failed.items()):
            err_console.print(f"[red]failed[/] {shard}: {error.splitlines()[0][:300]}")
        err_console.print("Run the same command again to retry only the failed items.")
        raise typer.Exit(1)


@app.command()
def run(
    sweep: Path = typer.Argument(..., help="Sweep YAML file."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="At most N items per benchmark (a deterministic subset)."
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="Ray cluster address (default: a private local Ray for this sweep, never a cluster found on the machine).",
    ),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, the spec, then ./mlflow.db)."
    ),
    storage_root: str | None = typer.Option(
        None,
        "--storage-root",
        help="Where shards are stored: a folder or a URI such as s3://bucket/runs (default: the spec's storage.root).",
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Model cache (default: $QTRUST_CACHE_DIR or ~/.cache/qtrust)."
    ),
    variant_cache: str | None = typer.Option(None, "--variant-cache", help=VARIANT_CACHE_HELP),
    response_cache: str | None = typer.Option(None, "--response-cache", help=RESPONSE_CACHE_HELP),
    verify_store: bool = typer.Option(False, "--verify-store", help=VERIFY_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Run a sweep; items already stored (same item key) are not computed again."""
    _run(
        sweep,
        {
            "data_dir": data_dir,
            "limit": limit,
            "address": address,
            "tracking_uri": tracking_uri,
            "storage_root": storage_root,
            "cache_dir": cache_dir,
            "quiet": quiet,
            "variant_cache": variant_cache,
            "response_cache": response_cache,
            "verify_store": verify_store,
        },
    )


@app.command()
def resume(
    sweep_dir: str = typer.Argument(
        ...,
        help="A sweep's folder in the store (holds sweep.yaml): a local path or a URI, "
        "e.g. qtrust-runs/demo or s3://bucket/runs/demo.",
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    address: str | None = typer.Option(
        None,
        "--address",
        help="Ray cluster address (default: a private local Ray for this sweep, never a cluster found on the machine).",
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Model cache."),
    variant_cache: str | None = typer.Option(None, "--variant-cache", help=VARIANT_CACHE_HELP),
    verify_store: bool = typer.Option(False, "--verify-store", help=VERIFY_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    judge_urls: list[str] = typer.Option([], "--judge-url", help=JUDGE_URL_HELP),
) -> None:
    """Resume a stored sweep: say what is missing, then compute only that (failed items included)."""
    spec, root = _stored(sweep_dir, judge_urls)
    _run(
        Path(sweep_dir) / "sweep.yaml",
        {
            "data_dir": data_dir,
            "address": address,
            "tracking_uri": tracking_uri,
            "storage_root": root,
            "cache_dir": cache_dir,
            "quiet": quiet,
            "variant_cache": variant_cache,
            "verify_store": verify_store,
        },
        resume_mode=True,
        spec=spec,
    )


def _stored(sweep_dir: str, judge_urls: list[str] | None = None):
    """The stored spec of a sweep folder (local or URI), with the real URLs of ``--judge-url``, and the store root
    it lives under; exit 2 if unreadable."""
    from jobs.results.stored import StoredSweepError, split_sweep_dir, stored_spec
    from jobs.spec.masked import with_judge_urls

    try:
        spec, _store = stored_spec(sweep_dir)
        spec = with_judge_urls(spec, list(judge_urls or []))
    except (StoredSweepError, SpecError) as err:
        _fail(str(err))
        raise
    return spec, split_sweep_dir(sweep_dir)[0]


@app.command()
def judge(
    sweep_dir: str = typer.Argument(
        ..., help="A sweep's folder in the store (holds sweep.yaml): a local path or a URI, e.g. qtrust-runs/demo."
    ),
    judges: list[str] = typer.Option(
        ...,
        "--judge",
        help="Judge to add: one of the sweep's judges, of --judges-file, "
        "or 'rule' / 'rule-binary' (repeat the option for several).",
    ),
    judges_file: Path | None = typer.Option(
        None, "--judges-file", help="YAML list of judges (the fields of a sweep's judges: section)."
    ),
    benchmarks: list[str] = typer.Option(
        [], "--benchmark", help="Benchmark to judge (repeatable; default: every open-ended one)."
    ),
    select: bool = typer.Option(
        False, "--select", help="Make the (first) judge the one whose labels give the benchmarks' metrics."
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: a private local Ray)."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Model cache (judge models)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    judge_urls: list[str] = typer.Option([], "--judge-url", help=JUDGE_URL_HELP),
) -> None:
    """(Re-)judge a stored sweep's answers with other judges: no generation, only missing judgments."""
    from jobs.spec.judges import read_judges_file, with_judges

    spec, root = _stored(sweep_dir, judge_urls)
    spec_path = Path(sweep_dir) / "sweep.yaml"
    try:
        extra = read_judges_file(judges_file) if judges_file else []
        spec = with_judges(spec, judges, extra, benchmarks, select, str(judges_file or spec_path))
    except SpecError as err:
        _fail(str(err))
    _run(
        spec_path,
        {
            "data_dir": data_dir,
            "address": address,
            "tracking_uri": tracking_uri,
            "storage_root": root,
            "cache_dir": cache_dir,
            "quiet": quiet,
            "judge_only": True,
        },
        resume_mode=True,
        spec=spec,
    )


@app.command()
def plan(
    sweep: Path = typer.Argument(..., help="Sweep YAML file."),
    gpus: str | None = typer.Option(
        None,
        "--gpus",
        help="The cluster to price it on: NxTYPE (8xA100-80GB, 4xA40-48GB; types in jobs/plan/cost_tables.yaml) "
        "or cpu:N (N cores). Default: cpu:1.",
    ),
    address: str | None = typer.Option(
        None, "--address", help="Read the GPUs (or CPUs) of a running Ray cluster instead of --gpus."
    ),
    device: str | None = typer.Option(None, "--device", help="With --address: the GPU type of its nodes."),
    throughput: Path | None = typer.Option(
        None, "--throughput", help="A YAML file overriding entries of the throughput and architecture tables."
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the estimate as JSON."),
) -> None:
    """Price a sweep before running it: items still to compute, tokens, memory per replica, replicas that fit, hours."""
    from jobs.data_ready import prepare_sweep_data
    from jobs.plan_command import plan_main

    spec = _load(sweep)
    if throughput is not None and not throughput.is_file():
        _fail(f"--throughput: {throughput} is not a file; pass a YAML file shaped like jobs/plan/cost_tables.yaml")
    try:
        folder = prepare_sweep_data(spec, data_dir).folder
        plan_main(
            spec,
            folder,
            gpus=gpus,
            address=address,
            device=device,
            throughput=throughput,
            as_json=json_out,
            console=console,
        )
    except (ValueError, BenchmarkDataError) as err:
        _fail(f"{sweep}: {err}")


@app.command()
def status(
    sweep_dir: str = typer.Argument(
        ..., help="A sweep's folder in the store (local path or URI), e.g. qtrust-runs/demo."
    ),
    watch: bool = typer.Option(False, "--watch", help="Refresh until the sweep ends (Ctrl-C to stop watching)."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest and lock holder as JSON."),
    interval: float = typer.Option(2.0, "--interval", min=0.1, help="Seconds between refreshes with --watch."),
) -> None:
    """Show a sweep's progress (during a run or after it): items per variant × benchmark, replicas, ETA."""
    from jobs.status import status_main

    code = status_main(sweep_dir, watch=watch, as_json=json_out, interval_s=interval, console=console)
    if code:
        raise typer.Exit(code)


METRICS_HELP = "Comma-separated metrics to tabulate (default: each benchmark's primary metric; 'all' for every one)."


def _metrics_option(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


@app.command()
def report(
    sweep_dir: str = typer.Argument(
        ..., help="A sweep's folder in the store (local path or URI), e.g. qtrust-runs/demo."
    ),
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="Take the items from this benchmark data folder instead of the copy the sweep's store keeps "
        "(needed only for sweeps stored without one; then $QTRUST_DATA_DIR, else the data cache).",
    ),
    metrics: str | None = typer.Option(None, "--metrics", help=METRICS_HELP),
    long: bool = typer.Option(False, "--long", help="One row per variant and metric instead of one table per metric."),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write the HTML report (default: <sweep dir>/report.html)."
    ),
    no_mlflow: bool = typer.Option(
        False, "--no-mlflow", help="Do not log the report to the sweep's parent MLflow run."
    ),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI (default: the manifest's; "
        "$MLFLOW_TRACKING_URI when the manifest keeps it without credentials).",
    ),
    partial: bool = typer.Option(
        False,
        "--partial",
        help="Report even when planned items are missing (a running sweep, a damaged or deleted shard): "
        "marked partial in the console, the HTML (report-partial.html) and MLflow. Without it such a "
        "report exits 1.",
    ),
    verify_store: bool = typer.Option(
        False,
        "--verify-store",
        help="Only check the store: read every shard, check it against its digest and its index, print "
        "ok / missing / damaged per variant × benchmark; exit 1 when anything is wrong.",
    ),
    items: bool = typer.Option(
        False,
        "--items",
        help="Also write items.csv beside the report: every scored answer with the label the parser gave it "
        "(variant, benchmark, item id, reference, output, label, error).",
    ),
) -> None:
    """Compare every variant with its model's reference (intervals, paired tests, flips, flags, ensemble
    search) from the stored answers alone, print the tables and write one self-contained HTML report.

    Exit 1 (nothing written, nothing logged) when planned items are missing from the store, unless
    --partial is given."""
    from jobs.results.adaptive_view import print_adaptive
    from jobs.results.compare import compare_results
    from jobs.results.completeness import EXIT_PARTIAL
    from jobs.results.report_file import write_report
    from jobs.results.stored import StoredSweepError, load_stored_sweep
    from jobs.results.tables import print_perspectives, print_results
    from jobs.tracking.report import log_report_to_mlflow

    if verify_store:
        raise typer.Exit(_verify_store(sweep_dir, data_dir))
    try:
        stored = load_stored_sweep(sweep_dir, data_dir)
    except (StoredSweepError, BenchmarkDataError, ModelSourceError, SpecError) as err:
        _fail(str(err))
        return
    complete = stored.completeness
    if complete.partial and not partial:
        for line in complete.lines():
            err_console.print(line, soft_wrap=True, markup=False, highlight=False)
        _fail(
            f"{sweep_dir}: the store lacks planned items, so no report was written; run `qtrust resume "
            f"{sweep_dir}` to compute them, `qtrust report --verify-store {sweep_dir}` to check every shard, or pass "
            "--partial to report what is stored (marked partial)",
            code=EXIT_PARTIAL,
        )
    lines = complete.lines() if complete.partial else None
    if lines:
        for line in lines:
            console.print(line, style="bold red", soft_wrap=True, markup=False, highlight=False)
    comparison = compare_results(stored.plan, stored.results, stored.quant_reports)
    print_results(console, stored.plan, stored.results, comparison, metrics=_metrics_option(metrics), long=long)
    print_perspectives(console, stored.plan, stored.results)
    print_adaptive(console, stored.adaptive)
    where = write_report(stored.plan, comparison, stored.store, out, partial=lines)
    console.print(f"{'Partial HTML report' if lines else 'HTML report'}: {where}")
    if items:
        from jobs.results.item_export import write_items

        exported = write_items(stored.results, stored.store, out.parent if out else None)
        console.print(f"Items with their parsed labels: {exported}")
    if not no_mlflow:
        from jobs.tracking.uri import TrackingUriError, redact, stored_tracking_uri

        manifest = dict(stored.manifest)
        entry = dict(manifest.get("mlflow") or {})
        note: str | None
        try:
            if entry.get("uri") or tracking_uri:
                entry["uri"] = stored_tracking_uri(str(entry.get("uri") or ""), tracking_uri)
                manifest["mlflow"] = entry
            note = log_report_to_mlflow(manifest, where, complete)
        except TrackingUriError as err:
            note = f"MLflow: the report was not logged: {err}"
        if note:
            console.print(redact(note))


def _verify_store(sweep_dir: str, data_dir: Path | None) -> int:
    """``qtrust report --verify-store``: every shard read and checked; the exit code (0 ok, 1 not)."""
    from jobs.results.stored import StoredSweepError, stored_plan, stored_spec
    from jobs.results.verify_store import print_verification, verify_plan
    from jobs.store.health import check_folder

    try:
        spec, store = stored_spec(sweep_dir)
        plan = stored_plan(spec, store, data_dir)
    except (StoredSweepError, BenchmarkDataError, ModelSourceError, SpecError) as err:
        _fail(str(err))
        return 2
    from jobs.store.adaptive import read_adaptive

    state = store.read_manifest().get("state")
    generations = check_folder(store.generations, read_all=True)
    judgments = check_folder(store.judgments, read_all=True)
    verification = verify_plan(plan, generations, judgments, state, read_adaptive(store))
    return print_verification(console, verification, store.uri)


@app.command()
def quantize(
    sweep: Path = typer.Argument(..., help="Sweep YAML file."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help=DATA_DIR_HELP + " Needed for benchmark calibration sources."
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="Ray cluster address (default: a private local Ray for this sweep, never a cluster found on the machine).",
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    storage_root: str | None = typer.Option(None, "--storage-root", help="Where the sweep's manifest is kept."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Model cache."),
    variant_cache: str | None = typer.Option(None, "--variant-cache", help=VARIANT_CACHE_HELP),
    rebuild_check: bool = typer.Option(
        False,
        "--rebuild-check",
        help="Then build every cached variant again into a temporary folder and compare its weights digest "
        "with the cached one: prints match or mismatch (with the largest weight difference); exit 1 on a mismatch.",
    ),
) -> None:
    """Quantize (into the variant cache), load and probe every variant of a sweep, without evaluating."""
    spec = _load(sweep)
    from jobs.quantize import prepare_sweep
    from jobs.results.tables import print_variants
    from jobs.spec.run_options import RunOptions

    options = RunOptions(
        data_dir=data_dir,
        address=address,
        tracking_uri=tracking_uri,
        storage_root=storage_root,
        cache_dir=cache_dir,
        variant_cache=variant_cache,
    )
    from jobs.tracking.uri import TrackingUriError

    try:
        outcome = prepare_sweep(spec, options, console, rebuild_check=rebuild_check)
    except (BenchmarkDataError, ModelSourceError, TrackingUriError, SpecError) as err:
        _fail(str(err))
        return
    print_variants(console, outcome.variants, {n: r.get("quantization", {}) for n, r in outcome.reports.items()})
    if outcome.failed:
        for name, error in sorted(outcome.failed.items()):
            err_console.print(f"[red]failed[/] {name}: {error.splitlines()[0][:300]}")
    if outcome.mismatched:
        err_console.print(f"[red]rebuild check failed[/] for {', '.join(outcome.mismatched)}: see above")
    if outcome.failed or outcome.mismatched:
        raise typer.Exit(1)


benchmarks_app = typer.Typer(
    help="Describe the built-in benchmarks (or your own definition file).", no_args_is_help=True
)
app.add_typer(benchmarks_app, name="benchmarks")


@benchmarks_app.command("list")
def benchmarks_list() -> None:
    """List the built-in benchmarks."""
    from rich.table import Table

    from trust.benchmarks.catalog import BENCHMARKS

    table = Table(title="Built-in benchmarks", title_justify="left")
    for column in ("name", "perspective", "task", "primary metric", "license"):
        table.add_column(column, overflow="fold")
    for name, definition in sorted(BENCHMARKS.items()):
        license_text = definition.license + (" [yellow](see note)[/]" if definition.license_note else "")
        table.add_row(name, definition.perspective or "", definition.task, definition.primary_metric, license_text)
    console.print(table)
    console.print("Details: qtrust benchmarks show NAME")


@benchmarks_app.command("show")
def benchmarks_show(
    name: str = typer.Argument(..., help="A built-in benchmark name, or the path of a definition file."),
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help=DATA_DIR_HELP + " Checks the definition against its records; shows item count and a sample.",
    ),
) -> None:
    """Describe one benchmark: data, parameters, answer space, metrics, license, protocol notes (exit 2 on any error)."""
    from trust.benchmarks.catalog import (
        UnknownBenchmarkError,
        definition_location,
        get_benchmark,
    )
    from trust.benchmarks.data_check import check_definition
    from trust.benchmarks.declarative import DefinitionError

    is_file = name.endswith((".yaml", ".yml")) or Path(name).is_file()
    try:
        bench = get_benchmark(name, None, name if is_file else None)
    except UnknownBenchmarkError as err:
        _fail(str(err))
        return
    except DefinitionError as err:
        _fail(f"{err.where}:\n" + "\n".join(f"  - {p}" for p in err.problems))
        return
    d = bench.definition
    console.print(f"[bold]{d.name}[/] (version {d.version}, {d.task}) — {d.description}")
    console.print(f"perspective: {d.perspective or '–'}   primary metric: {d.primary_metric}   judge: {d.judge}")
    console.print(f"license: {d.license}")
    if d.license_note:
        console.print(f"[yellow]license note:[/] {d.license_note}")
    if d.citation:
        console.print(f"citation: {d.citation}")
    console.print(f"data: {d.data.format} {d.data.path}" + (f" [{d.data.key_path}]" if d.data.key_path else ""))
    for pname, spec in d.parameters.items():
        allowed = f" (allowed: {', '.join(map(str, spec.allowed))})" if spec.allowed else ""
        console.print(f"option {pname} = {spec.default!r}{allowed} {spec.description}")
    if d.answer is not None:
        labels = ", ".join(d.answer.labels) if d.answer.labels else ""
        console.print(f"answer: {d.answer.kind} {labels}".rstrip())
    console.print(f"metrics: {', '.join(bench.metric_names) or '(per group)'}", markup=False)
    for entry in d.metrics:
        if entry.expr is not None:
            per = f" (per {entry.per.attribute})" if entry.per else ""
            console.print(f"  composite {entry.name}{per} = {entry.expr}", markup=False, highlight=False)
    if d.notes:
        console.print(f"notes: {d.notes}")
    folder = _data_folder(data_dir)
    report = check_definition(bench, folder)
    where = definition_location(d.name, name if is_file else None)
    if report.problems:
        _fail(f"{where}:\n" + "\n".join(f"  - {p}" for p in report.problems))
    if folder is None:
        console.print("[dim]data checks skipped: pass --data-dir DIR (or set QTRUST_DATA_DIR) to check the records[/]")
        return
    items = bench.load(folder)
    console.print(f"items: {len(items)}; first item id {items[0].id if items else '–'}")
    if items:
        for message in items[0].messages:
            console.print(f"  [dim]{message['role']}:[/] {message['content'][:500]}")


@benchmarks_app.command("metrics")
def benchmarks_metrics() -> None:
    """List the metric functions definitions can name, with their arguments (docs/metric-functions.md)."""
    from rich.markup import escape
    from rich.table import Table

    from trust.metrics.catalog import METRICS

    table = Table(title="Metric functions", title_justify="left")
    for column in ("name", "arguments", "description"):
        table.add_column(column, overflow="fold")
    for fn_name, info in sorted(METRICS.items()):
        args = ", ".join(
            f"{a.name}: {a.type_text}"
            + ("" if a.required else f" = {'null' if a.default is None else repr(a.default)}")
            for a in info.args
        )
        summary = " ".join(info.doc.split("\n\n")[0].split())
        table.add_row(fn_name, escape(args) or "–", escape(summary))
    console.print(table)
    console.print("Composite metrics (expr:) are described in docs/benchmark-definitions.md.")


data_app = typer.Typer(help="Get the benchmark data files.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch(
    names: list[str] | None = typer.Argument(
        None, help="Benchmark data folders (default: all), e.g. xstest decodingtrust."
    ),
    dest: Path | None = typer.Option(
        None,
        "--dest",
        help="Data folder to fill (default: $QTRUST_DATA_DIR, else the data cache ~/.cache/qtrust/data).",
    ),
    base_url: str | None = typer.Option(
        None, "--base-url", help="A mirror laid out like the data folder (instead of the public sources)."
    ),
) -> None:
    """Download benchmark files from their public sources, pinned to commits, and check their sha256."""
    from jobs.data_fetch import DataFetchError, console_progress, default_sources, fetch
    from trust.benchmarks.data import data_cache_dir

    target = dest or Path(os.environ.get("QTRUST_DATA_DIR") or data_cache_dir())
    try:
        report = fetch(
            list(names) if names else None,
            target,
            base_url=base_url,
            sources=default_sources(),
            progress=console_progress(),
        )
    except DataFetchError as err:
        _fail(str(err))
        return
    console.print(
        f"{target}: {len(report.downloaded)} downloaded, {len(report.replaced)} replaced, "
        f"{len(report.skipped)} already present; {report.bytes_downloaded / 1e6:.1f} MB"
    )


@app.command("judge-eval")
def judge_eval(
    judge_name: str = typer.Option(
        ..., "--judge", help="Judge to measure: 'rule' / 'rule-binary' or a judge of --judges-file."
    ),
    judges_file: Path | None = typer.Option(
        None, "--judges-file", help="YAML list of judges (the fields of a sweep's judges: section)."
    ),
    set_name: str = typer.Option("donotanswer", "--set", help="Labelled answer set (built in: donotanswer)."),
    split: str = typer.Option("report", "--split", help="Half of the set: report, tune or all."),
    limit: int | None = typer.Option(
        None,
        "--limit",
        min=1,
        help="Only the first N answers by a hash of their id (a deterministic subset, for slow judges).",
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then ./mlflow.db)."
    ),
    experiment: str = typer.Option("qtrust-judge-eval", "--experiment", help="MLflow experiment of the run."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Model cache (judge models)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Judge prompts per forward batch (model judges; default: the judge's)."
    ),
) -> None:
    """Measure a judge against people's labels (Do-Not-Answer) and log the agreement to MLflow."""
    from jobs.judge_eval import (
        JudgeEvalError,
        evaluate,
        print_evaluation,
        progress_reporter,
    )
    from jobs.tracking import ui_command
    from jobs.tracking.judge_eval import log_evaluation
    from jobs.tracking.uri import redact
    from trust.benchmarks.data import resolve_data_dir

    try:
        folder = resolve_data_dir(data_dir)
        with console.status("judging ...") as status:
            ev = evaluate(
                judge_name,
                judges_file=judges_file,
                set_name=set_name,
                split=split,
                limit=limit,
                data_dir=folder,
                cache_dir=cache_dir,
                batch_size=batch_size,
                progress=progress_reporter(console, status),
            )
    except (JudgeEvalError, BenchmarkDataError, ModelSourceError) as err:
        _fail(str(err))
        return
    print_evaluation(console, ev)
    uri, experiment_id, run_id = log_evaluation(
        ev, tracking_uri, experiment, warn=lambda message: err_console.print(f"[yellow]{redact(message)}[/]")
    )
    if run_id is None:
        err_console.print(f"[yellow]MLflow: the evaluation above was not logged to {redact(uri)}[/]")
        return
    console.print(
        f"MLflow: run '{ev.run_name}' (id {run_id}) in experiment '{experiment}' (id {experiment_id}) at {redact(uri)}"
    )
    command = ui_command(uri)
    if command:
        console.print(f"Open the MLflow UI:  [bold]{command}[/]")


def main() -> None:  # pragma: no cover - console entry point alias
    from jobs.redacted_output import redact_log_records, redact_standard_streams

    redact_standard_streams()  # whatever this process prints (Ray's worker lines, tracebacks) is redacted
    redact_log_records()  # and every log record, whichever handler (console, log file) writes it
    logging.basicConfig(level=os.environ.get("QTRUST_LOG_LEVEL", "WARNING"))
    app()
