"""The schema of a declarative benchmark definition (a YAML file).

A definition says where the data comes from (:class:`DataSource`), how a record becomes a prompt
(:class:`PromptSpec`, Jinja templates over the record's fields), what the reference answer is
(:class:`ReferenceSpec`), how an answer is parsed (:class:`AnswerSpec`), which group attributes an
item carries, and which metric functions score it (:class:`MetricSpec`, names from
:data:`trust.metrics.functions.METRIC_FUNCTIONS`). Built-in definitions live in
``trust/benchmarks/definitions/``; a user passes their own file in the sweep.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Join(_Strict):
    """Fields of another json file joined to each record by a key (e.g. an answer key kept apart)."""

    path: str = Field(description="json file relative to the data folder: an object keyed by the join key")
    key_path: str | None = Field(None, description="'/'-separated keys leading to that object")
    by: str = Field(description="the record field whose value (as text) is the key")
    into: str = Field(description="the record field that receives the joined value")
    required: bool = Field(True, description="a record whose key is missing is an error (false: the field is null)")


class DataSource(_Strict):
    """Records from one file of the data folder."""

    format: Literal["csv", "jsonl", "json"]
    path: str = Field(
        description="file path relative to the data folder (may use {{ params.* }}); a glob pattern reads every "
        "matching file in sorted order, each record carrying `_file` (the file name without extension)"
    )
    key_path: str | None = Field(
        None, description="json: '/'-separated keys leading to the list of records (may use {{ params.* }})"
    )
    columns: list[str] | None = Field(
        None,
        description="field names for records that are lists, not objects (csv: the file has no header row "
        "and these name its columns; extra columns are ignored)",
    )
    group_field: str | None = Field(
        None,
        description="json: the node at key_path is an object of lists (one list per group); each record "
        "gets this field set to its group's key",
    )
    join: list[Join] = Field(default_factory=list, description="json files joined to the records by a key")
    side_arrays: dict[str, str] = Field(
        default_factory=dict, description="field -> .npy file whose entries align with the records"
    )
    where: dict[str, list[str]] = Field(
        default_factory=dict,
        description="keep records whose field (as text) is one of the values (values may use {{ params.* }})",
    )
    drop_null: list[str] = Field(default_factory=list, description="drop records where these fields are null")


class Demonstrations(_Strict):
    """Few-shot demonstrations shown as earlier user/assistant turns."""

    source: Literal["item", "pool"]
    field: str | None = Field(None, description="item: the record field holding a list of demonstrations")
    pool: DataSource | None = Field(None, description="pool: where the demonstration records come from")
    count: Annotated[int, Field(ge=0)] | str | None = Field(
        None, description="how many demonstrations (default: all); an int, or a template over params giving one"
    )
    seed: int = Field(0, description="pool: seed of the deterministic draw")
    order: Literal["draw", "first"] = Field(
        "draw",
        description="pool: 'draw' takes a seeded random sample of `count`, 'first' the first `count` in file order",
    )
    match: str | None = Field(
        None,
        description="pool: an expression evaluated on the item's record and on every pool record; an item's "
        "demonstrations are the pool records giving the same value (e.g. the same subject)",
    )
    columns: list[str] | None = Field(None, description="names for demonstrations that are lists ([input, label])")
    completion_separator: str = Field(
        "\n\n",
        description="completion-style prompts: the text between a demonstration's question and its answer "
        "(' ' writes 'Answer: B' on one line, as lm-evaluation-harness does)",
    )
    user: str = Field(description="template of a demonstration's user turn")
    assistant: str = Field(description="template of a demonstration's answer")

    @model_validator(mode="after")
    def _source_fields(self) -> Demonstrations:
        if self.source == "item" and not self.field:
            raise ValueError("demonstrations from the item need 'field' (the record field holding them)")
        if self.source == "pool" and self.pool is None:
            raise ValueError("demonstrations from a pool need 'pool' (a data source)")
        if self.source == "item" and (self.match or self.order != "draw"):
            raise ValueError(
                "'match' and 'order' choose among a pool's records; demonstrations from the item have none"
            )
        return self


class Turn(_Strict):
    """One fixed conversation turn (e.g. a task description and its acknowledgement before demonstrations)."""

    role: Literal["user", "assistant"]
    content: str = Field(description="template of the turn's text")


class PromptSpec(_Strict):
    style: Literal["chat", "completion"] = Field(
        "chat", description="chat: messages through the model's chat template; completion: one plain text"
    )
    system: str | None = Field(None, description="template of the system message (none: the model's default)")
    preamble: list[Turn] = Field(
        default_factory=list, description="turns placed after the system message and before the demonstrations"
    )
    user: str = Field(description="template of the user message")
    demonstrations: Demonstrations | None = None


class ReferenceSpec(_Strict):
    value: str = Field(description="template giving the raw reference value")
    map: dict[str, str] | None = Field(None, description="raw value -> label of the answer space")


class AnswerSpec(_Strict):
    """How a model answer becomes a parsed label.

    ``short``: a short free-text answer (QA); the label is its first line, normalised (lower case, no
    punctuation or articles), compared with the reference by ``exact_match`` and ``token_f1``.
    """

    kind: Literal["labels", "open", "options", "short"]
    labels: dict[str, list[str]] = Field(default_factory=dict, description="label -> words that mean it")
    first_clause: bool = Field(False, description="only read the answer up to its first sentence break")
    refusal: bool = Field(True, description="answers the refusal detector flags parse as REFUSED")
    refusal_kinds: bool = Field(False, description="open answers: label full_refusal / partial_refusal / complied")
    choices: str | None = Field(None, description="options: template giving the list of option texts (JSON list)")
    extra_options: list[str] = Field(default_factory=list, description="options appended to every item's list")

    @model_validator(mode="after")
    def _kind_fields(self) -> AnswerSpec:
        if self.kind == "labels" and not self.labels:
            raise ValueError("a 'labels' answer needs at least one label in 'labels'")
        if self.kind == "labels":
            empty = [label for label, words in self.labels.items() if not words]
            if empty:
                raise ValueError(f"labels {empty} have no words; list the words that mean each label")
        if self.kind == "options" and not self.choices:
            raise ValueError("an 'options' answer needs 'choices' (a template giving the option list)")
        return self


class LoglikelihoodSpec(_Strict):
    """Multiple choice by option log-likelihood: the engine scores each choice after the prompt."""

    choices: str = Field(description="template giving the list of continuations (JSON list)")
    prefix: str = Field(" ", description="text put before every continuation")


class PerSpec(_Strict):
    """One composite metric per value of an item attribute (``<name>/<value>``; the value is ``group``)."""

    attribute: str = Field(description="the item attribute whose values split the items")
    values: list[str] | None = Field(
        None,
        description="the values to report (default: every value in the items; listing them names the metrics up front)",
    )


class MetricSpec(_Strict):
    """One metric entry: a registered function (``fn`` + ``args``) or a composite expression (``expr``)."""

    fn: str | None = Field(None, description="metric function name (see `qtrust benchmarks metrics`)")
    name: str | None = Field(None, description="metric name for functions returning one number; required with expr")
    args: dict[str, Any] = Field(
        default_factory=dict, description="the function's arguments (checked against its signature)"
    )
    expr: str | None = Field(
        None,
        description="composite: an expression over earlier metrics and label counts (see trust/metrics/composite.py)",
    )
    per: PerSpec | None = Field(None, description="composite: one metric per value of an attribute")
    higher_is_better: bool | None = Field(
        None,
        description="the metric's direction in tables and flags (false: lower is better, e.g. a bias score); "
        "default: what the metric function declares",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> MetricSpec:
        if (self.fn is None) == (self.expr is None):
            raise ValueError(
                "give either 'fn' (a metric function) or 'expr' (a composite expression), not both or neither"
            )
        if self.expr is not None:
            if not self.name:
                raise ValueError("a composite metric ('expr') needs 'name'")
            if self.args:
                raise ValueError("'args' belong to 'fn' metrics; a composite writes its values into 'expr'")
        elif self.per is not None:
            raise ValueError("'per' belongs to composite metrics ('expr'); use per_group_rate for functions")
        return self


class PerspectiveScoreSpec(_Strict):
    """How one metric maps onto DecodingTrust's 0-100 perspective scale (higher = more trustworthy)."""

    metric: str = Field(description="the metric the score is read from")
    higher_is_better: bool = Field(True, description="false: the score is 100 * (1 - metric)")


class ParameterSpec(_Strict):
    default: Any = None
    allowed: list[Any] | None = None
    description: str = ""


class BenchmarkDefinition(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    version: str = "1"
    description: str
    perspective: str | None = Field(None, description="trust perspective, e.g. machine_ethics, fairness, safety")
    perspective_score: PerspectiveScoreSpec | None = Field(
        None, description="the metric behind this benchmark's 0-100 perspective score"
    )
    citation: str | None = None
    license: str = Field(description="license of the data, as its source states it")
    license_note: str | None = Field(None, description="shown by `benchmarks show`, e.g. non-commercial terms")
    source_folder: str | None = Field(None, description="folder of the data folder (for `qtrust data fetch`)")
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    data: DataSource
    id: str = Field("{{ _index }}", description="template of the item id (unique, stable)")
    task: Literal["generate", "loglikelihood"] = "generate"
    prompt: PromptSpec
    reference: ReferenceSpec | None = None
    answer: AnswerSpec | None = None
    loglikelihood: LoglikelihoodSpec | None = None
    attributes: dict[str, str] = Field(default_factory=dict, description="name -> template of a group attribute")
    judge: str = Field(
        "refusal-rule",
        description="the judge template written for this benchmark (a built-in judge template name); without a "
        "judge in the sweep, the rule-based parser decides",
    )
    judge_labels: dict[str, str] = Field(
        default_factory=dict,
        description="a judge's label -> this benchmark's label (judge labels not listed are used as they are; "
        "'error' is a judgment that could not be read)",
    )
    metrics: list[MetricSpec] = Field(min_length=1)
    primary_metric: str
    max_new_tokens: int | None = Field(None, ge=1, description="suggested generation budget")
    notes: str | None = Field(None, description="protocol notes: where this differs from the source")

    @model_validator(mode="after")
    def _task_fields(self) -> BenchmarkDefinition:
        if self.task == "generate" and self.answer is None:
            raise ValueError("a 'generate' benchmark needs 'answer' (how answers are parsed)")
        if self.task == "loglikelihood" and self.loglikelihood is None:
            raise ValueError("a 'loglikelihood' benchmark needs 'loglikelihood' (the choices to score)")
        return self
