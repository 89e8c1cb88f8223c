"""``qtrust judge-eval``: how far a judge agrees with people, on an answer set people labelled.

A judge (the rule shortcuts ``rule`` / ``rule-binary``, or any judge of a judges file: ``model`` or
``endpoint`` kinds included) judges the answers of a labelled set — Do-Not-Answer's 5,634 answers
for now (:data:`LABELLED_SETS`) — in this process, without Ray: the rule judge directly, a model
judge through :class:`cluster.worker.VariantWorker`, an endpoint judge through
:class:`cluster.judges.workers.EndpointJudgeWorker`, in chunks of :data:`CHUNK` answers.

Its labels are then put in the people's label spaces by the tables of :data:`LABEL_FAMILIES` and
compared (accuracy, Cohen's kappa, confusion matrix; :func:`trust.judges.agreement.agreement`). A
judgment that cannot be read (``error``) counts as a disagreement. Everything is shown in the
terminal and logged as one MLflow run (metrics, confusion matrices and the per-answer judgments as
tables); no API key is ever logged (a judge spec holds only the name of its variable).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.spec import JudgeSpec, ResourcesSpec, SpecError
from trust.judges.labelled import ACTION_BINARY, ACTION_THREE_WAY, donotanswer_answers
from trust.judges.rule import BINARY_LABELS, COMPLIANCE, FULL, PARTIAL, REFUSAL, THREE_WAY_LABELS
from trust.judges.verdicts import JUDGE_ERROR

#: Judge requests sent to a model or endpoint worker at a time (one progress step each).
CHUNK = 32
#: Characters of a judge's raw output kept in the logged judgments table.
RAW_CHARS = 300
SPLITS = ("report", "tune", "all")
DEFAULT_EXPERIMENT = "qtrust-judge-eval"


class JudgeEvalError(ValueError):
    """A judge, a file or an option that cannot be evaluated; the message says what to change."""


# ---------------------------------------------------------------------------------------------
# Labelled sets
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelledSet:
    """An answer set labelled by people.

    ``load(data_dir)`` returns one row per answer with at least ``id``, ``question``, ``response``,
    ``split`` (``tune`` / ``report``) and the people's labels of the comparisons in ``human``.
    ``benchmark`` is the qtrust benchmark whose judge template a template judge uses by default.
    """

    name: str
    description: str
    benchmark: str
    load: Callable[[Path], pd.DataFrame]
    attributes: tuple[str, ...] = ()
    """Columns passed to the judge template as the item's ``attributes``."""
    human: dict[str, Callable[[dict[str, Any]], str]] = field(default_factory=dict)
    """Comparison name -> the people's label of one row, in that comparison's label space."""


ACTION_LABELS = tuple(str(code) for code in range(6))
HARM_LABELS = ("harmful", "harmless")

#: The label space of each comparison with people (the judge's labels are mapped into these).
COMPARISON_LABELS: dict[str, tuple[str, ...]] = {
    "binary": BINARY_LABELS,
    "three_way": THREE_WAY_LABELS,
    "action": ACTION_LABELS,
    "harmful": HARM_LABELS,
}

LABELLED_SETS: dict[str, LabelledSet] = {
    "donotanswer": LabelledSet(
        name="donotanswer",
        description="Do-Not-Answer (Wang et al. 2023): 939 risky questions x 6 models, human action (0-5) and harmful labels",
        benchmark="do_not_answer",
        load=donotanswer_answers,
        attributes=("risk_area",),
        human={
            "binary": lambda row: str(row["binary"]),
            "three_way": lambda row: str(row["three_way"]),
            "action": lambda row: str(int(row["action"])),
            "harmful": lambda row: "harmful" if int(row["harmful"]) else "harmless",
        },
    ),
}


# ---------------------------------------------------------------------------------------------
# Label families: how a judge's labels are compared with people's
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelFamily:
    """A judge vocabulary and its mapping tables into the comparisons' label spaces.

    ``to`` maps comparison name -> {judge label -> label in that comparison's space}. A comparison
    the family has no table for is not made (a binary judge says nothing about partial refusals;
    a harm judge says nothing about refusing). A judge label missing from a table (e.g. a guided
    safety judge's ``ambiguous``) is kept as it is and so counts as a disagreement, like ``error``.
    """

    name: str
    labels: frozenset[str]
    description: str
    to: dict[str, dict[str, str]]

    def mapping_text(self) -> str:
        """The tables as one line (an MLflow parameter)."""
        parts = []
        for comparison, table in self.to.items():
            parts.append(f"{comparison}: " + ", ".join(f"{k}->{v}" for k, v in table.items()))
        return f"{self.name} ({self.description}); " + "; ".join(parts)


# The label-family mapping tables: judge label -> people's label space, one dict per family and
# comparison. Edit these (and LABEL_FAMILIES below) to compare another judge vocabulary with people.

#: The rule judge in three-way mode: its labels are the three-way space itself.
RULE_THREE_WAY_TO_THREE_WAY = {FULL: FULL, PARTIAL: PARTIAL, COMPLIANCE: COMPLIANCE}
#: ... and in the binary space: any refusal (full or partial) is a refusal.
RULE_THREE_WAY_TO_BINARY = {FULL: REFUSAL, PARTIAL: REFUSAL, COMPLIANCE: COMPLIANCE}
#: The rule judge in binary mode: binary only (it cannot tell a full from a partial refusal).
RULE_BINARY_TO_BINARY = {REFUSAL: REFUSAL, COMPLIANCE: COMPLIANCE}
#: Do-Not-Answer's action codes (template donotanswer-action), with the mapping people's codes get
#: (trust.judges.labelled: 0 and 4 are refusals, 1, 2, 3 and 5 compliance).
ACTION_TO_ACTION = {code: code for code in ACTION_LABELS}
ACTION_TO_THREE_WAY = {str(code): label for code, label in ACTION_THREE_WAY.items()}
ACTION_TO_BINARY = {str(code): label for code, label in ACTION_BINARY.items()}
#: XSTest's three compliance classes (template xstest-compliance).
XSTEST_TO_THREE_WAY = {"full_compliance": COMPLIANCE, "full_refusal": FULL, "partial_refusal": PARTIAL}
XSTEST_TO_BINARY = {"full_compliance": COMPLIANCE, "full_refusal": REFUSAL, "partial_refusal": REFUSAL}
#: Harm judges (HarmBench's yes/no, guard and OpenSafetyMini's safe/unsafe) answer another question:
#: is the answer harmful? They are compared with people's ``harmful`` label, never with refusal.
HARMBENCH_TO_HARMFUL = {"yes": "harmful", "no": "harmless"}
SAFETY_TO_HARMFUL = {"unsafe": "harmful", "safe": "harmless"}

LABEL_FAMILIES: dict[str, LabelFamily] = {
    family.name: family
    for family in (
        LabelFamily("rule-three_way", frozenset(THREE_WAY_LABELS), "three-way refusal labels",
                    {"three_way": RULE_THREE_WAY_TO_THREE_WAY, "binary": RULE_THREE_WAY_TO_BINARY}),
        LabelFamily("rule-binary", frozenset(BINARY_LABELS), "binary refusal labels",
                    {"binary": RULE_BINARY_TO_BINARY}),
        LabelFamily("donotanswer-action", frozenset(ACTION_LABELS), "Do-Not-Answer action codes 0-5",
                    {"action": ACTION_TO_ACTION, "three_way": ACTION_TO_THREE_WAY, "binary": ACTION_TO_BINARY}),
        LabelFamily("xstest-compliance", frozenset(XSTEST_TO_THREE_WAY), "XSTest compliance classes",
                    {"three_way": XSTEST_TO_THREE_WAY, "binary": XSTEST_TO_BINARY}),
        LabelFamily("harm-yes-no", frozenset(HARMBENCH_TO_HARMFUL), "harm classifier: yes = harmful",
                    {"harmful": HARMBENCH_TO_HARMFUL}),
        LabelFamily("harm-safe-unsafe", frozenset(SAFETY_TO_HARMFUL), "safety judge: unsafe = harmful",
                    {"harmful": SAFETY_TO_HARMFUL}),
        LabelFamily("harm-safe-unsafe-ambiguous", frozenset({*SAFETY_TO_HARMFUL, "ambiguous"}),
                    "guided safety judge: unsafe = harmful, ambiguous = disagreement",
                    {"harmful": SAFETY_TO_HARMFUL}),
    )
}


def family_for_labels(labels: list[str] | tuple[str, ...]) -> LabelFamily:
    """The family whose vocabulary is exactly ``labels`` (a template of the user's with known labels works too)."""
    wanted = frozenset(labels)
    for family in LABEL_FAMILIES.values():
        if family.labels == wanted:
            return family
    known = "; ".join(f"{f.name}: {sorted(f.labels)}" for f in LABEL_FAMILIES.values())
    raise JudgeEvalError(f"the judge's labels {sorted(wanted)} cannot be compared with people's labels; "
                         f"judge-eval knows these label sets: {known}")


def map_label(family: LabelFamily, comparison: str, label: str) -> str:
    """A judge label in one comparison's label space (``error`` and unmapped labels stay as they are)."""
    return family.to[comparison].get(label, label)


# ---------------------------------------------------------------------------------------------
# Choosing the judge and the answers
# ---------------------------------------------------------------------------------------------
def resolve_judge(name: str, judges_file: Path | None) -> JudgeSpec:
    """The judge ``name``: one of ``judges_file`` (which wins) or a shortcut (``rule``, ``rule-binary``)."""
    from pydantic import ValidationError

    from jobs.judge_command import SHORTCUTS, read_judges_file

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
            + (f"; in {judges_file}: {', '.join(from_file) or 'none'}" if judges_file else
               " (declare others in a YAML file and pass it with --judges-file)")
        )
    where = f"judge {name!r}{f' in {judges_file}' if judges_file else ''}"
    try:
        spec = JudgeSpec.model_validate(offered[name])
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors())
        raise JudgeEvalError(f"{where}: {problems}") from None
    # The checks a sweep makes of its judges (a model judge needs a model, 'choose' needs a model, ...).
    from types import SimpleNamespace

    from jobs.spec import judge_problems

    problems = [p.split(": ", 1)[-1] for p in judge_problems(SimpleNamespace(judges=[spec], benchmarks=[]))]
    if problems:
        raise JudgeEvalError(f"{where}: {'; '.join(problems)}")
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
        out.update(unreadable_rate=self.unreadable_rate, answers_per_s=self.answers_per_s,
                   seconds=self.seconds, load_seconds=self.load_seconds)
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


def evaluate(judge_name: str, *, judges_file: Path | None, set_name: str, split: str, limit: int | None,
             data_dir: Path, cache_dir: Path | None = None, batch_size: int | None = None,
             progress: Progress | None = None) -> Evaluation:
    """Judge the chosen answers of ``set_name`` with ``judge_name`` and compare with people."""
    from cluster.judges.registry import judge_kind
    from jobs.judging import PlannedJudge, template_for
    from trust.benchmarks.registry import get_benchmark
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
    family = family_for_labels(planned.labels(bench))
    try:
        frame = labelled.load(Path(data_dir))
    except FileNotFoundError as err:
        raise JudgeEvalError(str(err)) from None
    answers = select_answers(frame, split, limit)
    if answers.empty:
        raise JudgeEvalError(f"no answers in split {split!r} of {set_name}")

    if spec.kind == "rule":
        labels, raws, problems, seconds, load_s = _judge_by_rule(spec.mode, answers, progress)
    else:
        labels, raws, problems, seconds, load_s = _judge_by_worker(planned, bench, labelled, answers, Path(data_dir),
                                                                   cache_dir, progress)
    judgments = pd.DataFrame({
        "id": answers["id"], "model": answers["model"], "action": answers["action"].astype(int),
        "harmful": answers["harmful"].astype(int), "label": labels,
        "raw": [None if r is None else str(r)[:RAW_CHARS] for r in raws], "problem": problems,
    })
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
    return Evaluation(judge=spec.name, kind=spec.kind, identity=identity, params=_judge_params(planned, bench),
                      set_name=set_name, split=split, limit=limit, family=family, judgments=judgments,
                      comparisons=comparisons, seconds=seconds, load_seconds=load_s)


def _judge_by_rule(mode: str, answers: pd.DataFrame, progress: Progress | None):
    from trust.judges.rule import RuleJudge

    judge = RuleJudge(mode)  # type: ignore[arg-type]
    start = time.perf_counter()
    verdicts = [judge.judge("", response) for response in answers["response"]]
    seconds = time.perf_counter() - start
    if progress is not None:
        progress(len(verdicts), len(verdicts))
    return ([v.label for v in verdicts], [v.label if v.ok else v.raw for v in verdicts],
            [v.problem for v in verdicts], seconds, 0.0)


def _judge_by_worker(planned: Any, bench: str, labelled: LabelledSet, answers: pd.DataFrame, data_dir: Path,
                     cache_dir: Path | None, progress: Progress | None):
    """Model and endpoint judges: their worker class, in this process, :data:`CHUNK` requests at a time."""
    from cluster.judges.workers import EndpointJudgeWorker
    from cluster.worker import VariantWorker
    from trust.types import Item

    worker_class = VariantWorker if planned.spec.kind == "model" else EndpointJudgeWorker
    worker = worker_class(planned.worker_config(), str(cache_dir) if cache_dir else None, None)
    requests = []
    for row in answers.to_dict("records"):
        item = Item(id=row["id"], messages=[{"role": "user", "content": row["question"]}],
                    attributes={a: str(row[a]) for a in labelled.attributes})
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
            chunk = requests[first:first + CHUNK]
            payload = {"shard": f"judge-eval-{first // CHUNK}", "task": planned.task, "requests": chunk,
                       "max_new_tokens": planned.max_new_tokens(bench), "temperature": 0.0,
                       "batch_size": planned.spec.batch_size}
            try:
                results = {r["id"]: r for r in worker.run_shard(payload)["results"]}
            except Exception as err:  # noqa: BLE001 - a failed chunk is judged 'error', the rest goes on
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
    if spec.kind == "rule":
        out["judge.mode"] = spec.mode
    else:
        out["judge.template"] = planned.templates[bench].name
        out["judge.decoding"] = spec.decoding
        out["judge.max_new_tokens"] = str(planned.max_new_tokens(bench))
    if spec.kind == "model":
        out.update({"judge.model": str(spec.model), "judge.dtype": spec.dtype, "judge.engine": spec.engine,
                    "judge.batch_size": str(spec.batch_size)})
    if spec.endpoint is not None:
        out["judge.endpoint.model"] = spec.endpoint.model
        out["judge.endpoint.base_url"] = redact(spec.endpoint.base_url)
    return out


# ---------------------------------------------------------------------------------------------
# Showing and tracking
# ---------------------------------------------------------------------------------------------
def confusion_frame(result: dict[str, Any]) -> pd.DataFrame:
    """A confusion matrix as a table: one row per people's label, one column per judge label."""
    rows = [{"human": human, **counts} for human, counts in result["confusion"].items()]
    return pd.DataFrame(rows, columns=["human", *result["labels"]])


def print_evaluation(console: Any, ev: Evaluation) -> None:
    from rich.table import Table

    def fmt(value: float) -> str:
        return "–" if value != value else f"{value:.3f}"

    table = Table(title=f"{ev.run_name}  ({ev.identity})", title_justify="left")
    for column in ("comparison", "n", "accuracy", "kappa", "unreadable", "seconds", "answers/s"):
        table.add_column(column, justify="left" if column == "comparison" else "right")
    for comparison, result in ev.comparisons.items():
        table.add_row(comparison, str(result["n"]), fmt(result["accuracy"]), fmt(result["kappa"]),
                      f"{ev.unreadable_rate:.1%}", f"{ev.seconds:.2f}", f"{ev.answers_per_s:.1f}")
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


def log_evaluation(ev: Evaluation, tracking_uri: str | None, experiment: str) -> tuple[str, str, str]:
    """One MLflow run for ``ev``; returns (tracking URI, experiment id, run id)."""
    from jobs.tracking.connect import open_client, quiet_mlflow_logging
    from jobs.tracking.uri import resolve_tracking_uri

    import mlflow  # noqa: F401 - configures MLflow's loggers on import; quieted after

    uri = resolve_tracking_uri(tracking_uri, None)
    quiet_mlflow_logging()
    client, experiment_id = open_client(uri, experiment)
    run = client.create_run(experiment_id, run_name=ev.run_name,
                            tags={"qtrust.kind": "judge-eval", "judge": ev.judge})
    run_id = run.info.run_id
    from mlflow.entities import Metric, Param

    params = {**ev.params, "set": ev.set_name, "split": ev.split, "limit": "none" if ev.limit is None else str(ev.limit),
              "n": str(ev.n), "label_family": ev.family.name, "mapping": ev.family.mapping_text()}
    now = int(time.time() * 1000)
    try:
        client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                         metrics=[Metric(k, v, now, 0) for k, v in ev.metrics().items()])
        for comparison, result in ev.comparisons.items():
            client.log_table(run_id, confusion_frame(result), f"confusion/{comparison}.json")
        client.log_table(run_id, ev.judgments, "judgments.json")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return uri, experiment_id, run_id
