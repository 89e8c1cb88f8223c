"""``qtrust judge-eval``: how far a judge agrees with people, on an answer set people labelled.

A judge (the rule shortcuts ``rule`` / ``rule-binary``, or any judge of a judges file: ``model`` or
``endpoint`` kinds included) judges the answers of a labelled set — Do-Not-Answer's 5,634 answers
for now (:data:`LABELLED_SETS`) — in this process, without Ray: the rule judge directly, a model
judge through :class:`cluster.variants.worker.VariantWorker`, an endpoint judge through
:class:`cluster.judges.workers.EndpointJudgeWorker`, in chunks of :data:`CHUNK` answers.

Its labels are then put in the people's label spaces by the tables of :data:`LABEL_FAMILIES` and
compared (accuracy, Cohen's kappa, confusion matrix; :func:`trust.judges.agreement.agreement`). A
judgment that cannot be read (``error``) counts as a disagreement. Everything is shown in the
terminal and logged as one MLflow run (metrics, confusion matrices and the per-answer judgments as
tables); no API key is ever logged (a judge spec holds only the name of its variable)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.spec.schema import JudgeSpec, ResourcesSpec, SpecError
from jobs.tracking.judge_eval import confusion_frame
from trust.judges.label_families import (
    COMPARISON_LABELS,
    LABELLED_SETS,
    LabelFamily,
    LabelFamilyError,
    LabelledSet,
    family_for_labels,
    map_label,
)
from trust.judges.verdicts import JUDGE_ERROR, Verdict

#: Judge requests sent to a model or endpoint worker at a time (one progress step each).
CHUNK = 32


#: Characters of a judge's raw output kept in the logged judgments table.
RAW_CHARS = 300


SPLITS = ("report", "tune", "all")


DEFAULT_EXPERIMENT = "qtrust-judge-eval"


class JudgeEvalError(ValueError):
    """A judge, a file or an option that cannot be evaluated; the message says what to change."""


# ---------------------------------------------------------------------------------------------
# Choosing the judge and the answers
# ---------------------------------------------------------------------------------------------
def resolve_judge(name: str, judges_file: Path | None) -> JudgeSpec:
    """The judge ``name``: one of ``judges_file`` (which wins) or a shortcut (``rule``, ``rule-binary``)."""
    from pydantic import ValidationError

    from jobs.spec.judges import SHORTCUTS, read_judges_file

    offered: dict[str, dict[str, Any]] = {k: dict(v) for k, v in SHORTCUTS.items()}
    if judges_file is not None:
        try:
            listed = read_judges_file(Path(judges_file))
        except SpecError as err:
            raise JudgeEvalError(f"--judges-file {judges_file}: {'; '.join(err.problems)}") from None
        offered.update({str(j.get("name")): j for j in listed})
    if name not in offered:
        from_file = [n for n in offered if n not in SHORTCUTS]
        raise JudgeEvalError(
            f"--judge {name}: unknown judge; shortcuts: {', '.join(SHORTCUTS)}"
            + (
                f"; in {judges_file}: {', '.join(from_file) or 'none'}"
                if judges_file
                else " (declare others in a YAML file and pass it with --judges-file)"
            )
        )
    where = f"judge {name!r}{f' in {judges_file}' if judges_file else ''}"
    try:
        spec = JudgeSpec.model_validate(offered[name])
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors())
        raise JudgeEvalError(f"{where}: {problems}") from None
    # The checks a sweep makes of its judges: the kind's (a model judge needs a model, 'choose' needs a model, ...).
    from cluster.judges.kinds import judge_kind

    wrong = [message for _field, message in judge_kind(spec.kind).problems(spec)]
    if wrong:
        raise JudgeEvalError(f"{where}: {'; '.join(wrong)}")
    return spec


def answer_hash(answer_id: str) -> str:
    """The order of the ``--limit`` subset: answers sorted by the sha256 of their id."""
    return hashlib.sha256(answer_id.encode("utf-8")).hexdigest()


def select_answers(frame: pd.DataFrame, split: str, limit: int | None) -> pd.DataFrame:
    """The answers of ``split`` (``all``: both halves), sorted by :func:`answer_hash`, the first ``limit``."""
    if split not in SPLITS:
        raise JudgeEvalError(f"--split {split}: must be one of {', '.join(SPLITS)}")
    chosen = frame if split == "all" else frame[frame["split"] == split]
    order = chosen["id"].map(answer_hash)
    chosen = chosen.assign(_order=order).sort_values("_order", kind="stable").drop(columns="_order")
    if limit is not None:
        chosen = chosen.head(limit)
    return chosen.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Running the judge
# ---------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """One judge measured on one labelled set."""

    judge: str
    kind: str
    identity: str
    params: dict[str, str]
    set_name: str
    split: str
    limit: int | None
    family: LabelFamily
    judgments: pd.DataFrame
    """One row per answer: id, model, action, harmful, label, raw, problem, and the mapped labels."""
    comparisons: dict[str, dict[str, Any]]
    """Comparison -> :func:`trust.judges.agreement.agreement` result."""
    seconds: float
    load_seconds: float

    @property
    def n(self) -> int:
        return len(self.judgments)

    @property
    def unreadable_rate(self) -> float:
        return float((self.judgments["label"] == JUDGE_ERROR).mean()) if self.n else float("nan")

    @property
    def answers_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("nan")

    @property
    def run_name(self) -> str:
        return f"judge-eval · {self.judge} · {self.set_name}/{self.split}"

    def metrics(self) -> dict[str, float]:
        """Tracked metrics (a NaN, e.g. kappa when people used one label only, is left out)."""
        out: dict[str, float] = {}
        for comparison, result in self.comparisons.items():
            out[f"{comparison}/accuracy"] = float(result["accuracy"])
            out[f"{comparison}/kappa"] = float(result["kappa"])
        out.update(
            unreadable_rate=self.unreadable_rate,
            answers_per_s=self.answers_per_s,
            seconds=self.seconds,
            load_seconds=self.load_seconds,
        )
        return {k: v for k, v in out.items() if v == v}


Progress = Callable[[int, int], None]


"""Called with (answers judged so far, total)."""


def progress_reporter(console: Any, status: Any) -> Progress:
    """Progress on a terminal: the status line; elsewhere (a log file, CI): a line per tenth of the answers."""
    shown = [0]

    def report(done: int, total: int) -> None:
        if console.is_terminal:
            status.update(f"judging: {done}/{total} answers")
        elif done < total and done - shown[0] >= max(1, total // 10):
            shown[0] = done
            console.print(f"judged {done}/{total} answers")

    return report


def evaluate(
    judge_name: str,
    *,
    judges_file: Path | None,
    set_name: str,
    split: str,
    limit: int | None,
    data_dir: Path,
    cache_dir: Path | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Judge the chosen answers of ``set_name`` with ``judge_name`` and compare with people."""
    from cluster.judges.kinds import judge_kind
    from jobs.plan.judges import PlannedJudge, template_for
    from trust.benchmarks.catalog import get_benchmark
    from trust.judges.templates import TemplateError

    if set_name not in LABELLED_SETS:
        raise JudgeEvalError(f"--set {set_name}: unknown labelled set; available: {', '.join(LABELLED_SETS)}")
    if limit is not None and limit < 1:
        raise JudgeEvalError("--limit must be at least 1")
    labelled = LABELLED_SETS[set_name]
    spec = resolve_judge(judge_name, judges_file)
    if batch_size is not None:
        spec = spec.model_copy(update={"batch_size": batch_size})
    kind = judge_kind(spec.kind)
    bench = labelled.benchmark
    templates = {}
    if kind.needs_template:
        try:
            templates[bench] = template_for(spec, get_benchmark(bench, {}, None))
        except TemplateError as err:
            raise JudgeEvalError(f"judge {spec.name!r}: {err}") from None
    resources = ResourcesSpec().merged(spec.resources)
    planned = PlannedJudge(spec=spec, kind=kind, resources=resources, templates=templates, benchmarks=[bench])
    try:
        family = family_for_labels(planned.labels(bench))
    except LabelFamilyError as err:
        raise JudgeEvalError(str(err)) from None
    try:
        frame = labelled.load(Path(data_dir))
    except FileNotFoundError as err:
        raise JudgeEvalError(str(err)) from None
    answers = select_answers(frame, split, limit)
    if answers.empty:
        raise JudgeEvalError(f"no answers in split {split!r} of {set_name}")

    in_process = kind.in_process(spec)
    if in_process is not None:
        labels, raws, problems, seconds, load_s = _judge_in_process(in_process, answers, progress)
    else:
        labels, raws, problems, seconds, load_s = _judge_by_worker(
            planned, bench, labelled, answers, Path(data_dir), cache_dir, progress
        )
    judgments = pd.DataFrame(
        {
            "id": answers["id"],
            "model": answers["model"],
            "action": answers["action"].astype(int),
            "harmful": answers["harmful"].astype(int),
            "label": labels,
            "raw": [None if r is None else str(r)[:RAW_CHARS] for r in raws],
            "problem": problems,
        }
    )
    from trust.judges.agreement import agreement

    comparisons: dict[str, dict[str, Any]] = {}
    records = answers.to_dict("records")
    for comparison in COMPARISON_LABELS:
        if comparison not in family.to or comparison not in labelled.human:
            continue
        human = [labelled.human[comparison](row) for row in records]
        judged = [map_label(family, comparison, label) for label in labels]
        judgments[f"human_{comparison}"] = human
        judgments[f"judge_{comparison}"] = judged
        comparisons[comparison] = agreement(human, judged, COMPARISON_LABELS[comparison])
    identity = planned.identity(bench)
    return Evaluation(
        judge=spec.name,
        kind=spec.kind,
        identity=identity,
        params=_judge_params(planned, bench),
        set_name=set_name,
        split=split,
        limit=limit,
        family=family,
        judgments=judgments,
        comparisons=comparisons,
        seconds=seconds,
        load_seconds=load_s,
    )


def _judge_in_process(judge: Callable[[str | None], Verdict], answers: pd.DataFrame, progress: Progress | None):
    """Judges that need no worker (the rule judge): every answer in this process, no load time."""
    start = time.perf_counter()
    verdicts = [judge(response) for response in answers["response"]]
    seconds = time.perf_counter() - start
    if progress is not None:
        progress(len(verdicts), len(verdicts))
    return (
        [v.label for v in verdicts],
        [v.label if v.ok else v.raw for v in verdicts],
        [v.problem for v in verdicts],
        seconds,
        0.0,
    )


def _judge_by_worker(
    planned: Any,
    bench: str,
    labelled: LabelledSet,
    answers: pd.DataFrame,
    data_dir: Path,
    cache_dir: Path | None,
    progress: Progress | None,
):
    """Judges with a worker (model, endpoint): the kind's worker class, in this process, :data:`CHUNK` requests at a
    time (an endpoint worker reads its API key from this process's environment)."""
    from trust.types import Item

    worker_class = planned.kind.worker_class()
    worker = worker_class(planned.worker_config(), str(cache_dir) if cache_dir else None, None)
    requests = []
    for row in answers.to_dict("records"):
        item = Item(
            id=row["id"],
            messages=[{"role": "user", "content": row["question"]}],
            attributes={a: str(row[a]) for a in labelled.attributes},
        )
        requests.append({"id": row["id"], **planned.request(bench, item, row["response"], data_dir)})
    start = time.perf_counter()
    worker.load()
    load_s = time.perf_counter() - start
    labels: list[str] = []
    raws: list[str | None] = []
    problems: list[str | None] = []
    start = time.perf_counter()
    try:
        for first in range(0, len(requests), CHUNK):
            chunk = requests[first : first + CHUNK]
            payload = {
                "shard": f"judge-eval-{first // CHUNK}",
                "task": planned.task,
                "requests": chunk,
                "max_new_tokens": planned.max_new_tokens(bench),
                "temperature": 0.0,
                "batch_size": planned.spec.batch_size,
            }
            try:
                results = {r["id"]: r for r in worker.run_shard(payload)["results"]}
            except Exception as err:
                results = {r["id"]: {"error": f"{type(err).__name__}: {err}"} for r in chunk}
            for request in chunk:
                result = results.get(request["id"]) or {"error": "the judge returned no result for this answer"}
                error = result.get("error")
                if error:
                    labels.append(JUDGE_ERROR)
                    raws.append(result.get("text"))
                    problems.append(str(error))
                    continue
                raw, verdict = planned.read(bench, result)
                labels.append(verdict.label)
                raws.append(raw)
                problems.append(verdict.problem)
            if progress is not None:
                progress(len(labels), len(requests))
    finally:
        worker.close()
    return labels, raws, problems, time.perf_counter() - start, load_s


def _judge_params(planned: Any, bench: str) -> dict[str, str]:
    """What names the judge in the run's parameters (an endpoint's key variable is never read or logged)."""
    from jobs.tracking.uri import redact

    spec = planned.spec
    out = {"judge": spec.name, "judge.kind": spec.kind, "judge.identity": planned.identity(bench)}
    out.update({f"judge.{name}": value for name, value in planned.eval_params(bench).items()})
    if spec.endpoint is not None:
        out["judge.endpoint.model"] = spec.endpoint.model
        out["judge.endpoint.base_url"] = redact(spec.endpoint.base_url)
    return out


def print_evaluation(console: Any, ev: Evaluation) -> None:
    from rich.table import Table

    def fmt(value: float) -> str:
        return "–" if value != value else f"{value:.3f}"

    table = Table(title=f"{ev.run_name}  ({ev.identity})", title_justify="left")
    for column in ("comparison", "n", "accuracy", "kappa", "unreadable", "seconds", "answers/s"):
        table.add_column(column, justify="left" if column == "comparison" else "right")
    for comparison, result in ev.comparisons.items():
        table.add_row(
            comparison,
            str(result["n"]),
            fmt(result["accuracy"]),
            fmt(result["kappa"]),
            f"{ev.unreadable_rate:.1%}",
            f"{ev.seconds:.2f}",
            f"{ev.answers_per_s:.1f}",
        )
    console.print(table)
    if ev.load_seconds:
        console.print(f"judge loaded in {ev.load_seconds:.1f} s (not counted in answers/s)")
    for comparison, result in ev.comparisons.items():
        frame = confusion_frame(result)
        matrix = Table(title=f"{comparison}: people (rows) × judge (columns)", title_justify="left")
        for column in frame.columns:
            matrix.add_column(str(column), justify="left" if column == "human" else "right")
        for record in frame.itertuples(index=False):
            matrix.add_row(*(str(v) for v in record))
        console.print(matrix)
