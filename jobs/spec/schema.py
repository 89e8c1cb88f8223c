"""The sweep spec's schema: pydantic models of a sweep file, validated before Ray starts or a model loads.

A sweep crosses ``models`` × ``recipes`` (the *variants*, named ``<model>-<recipe>``) × ``benchmarks``
and adds precision ``ensembles`` over recipes of the same model.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cluster.engines.hf_settings import HFSettings
from cluster.engines.vllm_settings import VLLMSettings
from cluster.judges.endpoint import EndpointSpec
from cluster.models.builtin import BUILTIN_MODELS
from cluster.quantization.recipes import QuantRecipe, without_empty_params

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


_NAME_HELP = "letters, digits, '_', '.', '-' (starting with a letter or digit, at most 64 characters)"


class SpecError(Exception):
    """A sweep spec that cannot be run. ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        if len(problems) == 1:  # one problem is one line
            super().__init__(f"{source}: {problems[0]}")
            return
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the sweep spec:\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


def _check_name(value: str) -> str:
    """``value`` if it is a safe name (it becomes a folder in the store), else ValueError naming the rule."""
    if not re.fullmatch(NAME_PATTERN, value) or ".." in value:
        raise ValueError(f"{value!r} is not a valid name; use {_NAME_HELP}, and no '..'")
    return value


def _check_location(value: str | None, info: ValidationInfo) -> str | None:
    """A storage location without credentials in it (they would be copied into sweep.yaml and MLflow)."""
    from cluster.storage.uri import location_problem

    if value is None:
        return value
    problem = location_problem(value, f"storage.{info.field_name}")
    if problem:
        raise ValueError(problem.split(": ", 1)[1])
    return value


class ModelSpec(_Strict):
    """One model: a built-in name, a local Hugging Face folder or a hub id."""

    name: str
    source: str = Field(description="built-in name (e.g. smollm2-135m), local HF folder, or hub id")
    revision: str | None = Field(None, description="hub revision (commit, tag or branch)")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    engine: Literal["auto", "hf", "vllm", "fake"] = Field(
        "hf",
        description="inference engine: hf (transformers), vllm, or auto (vLLM when installed and it serves the "
        "variant, else hf); 'fake' is for scheduler tests and scale simulations only",
    )
    engine_options: dict[str, Any] = Field(default_factory=dict, description="options passed to the fake engine")
    hf: HFSettings = Field(default_factory=HFSettings, description="how transformers serves this model's variants")
    vllm: VLLMSettings = Field(default_factory=VLLMSettings, description="how vLLM serves this model's variants")
    recipes: list[str] | None = Field(
        None, description="names of the recipes to apply to this model (default: every recipe of the sweep)"
    )
    resources: PlacementOverride | None = Field(
        None, description="replicas and resources of this model's workers (overrides the sweep's resources)"
    )

    _name = field_validator("name")(_check_name)


class RecipeSpec(QuantRecipe):
    """A quantization recipe with the name it carries in variant names (``<model>-<name>``)."""

    name: str
    engine: Literal["auto", "hf", "vllm"] | None = Field(
        None, description="engine for this recipe's variants, instead of the model's engine"
    )
    resources: PlacementOverride | None = Field(
        None, description="replicas and resources of this recipe's workers (overrides the model's and the sweep's)"
    )

    _name = field_validator("name")(_check_name)

    def key_fields(self) -> dict[str, object]:
        """The quantization fields only: the engine is keyed on its own (see ``jobs.plan.keys.item_key``)."""
        return without_empty_params(self.model_dump(mode="json", exclude=NOT_QUANTIZATION))

    def quant_recipe(self) -> QuantRecipe:
        """The plain recipe the worker rebuilds (no name, no engine, no resources)."""
        return QuantRecipe.model_validate(self.model_dump(exclude=NOT_QUANTIZATION))


class AdaptiveOverride(_Strict):
    """A benchmark's own ``adaptive:`` settings: any field left out comes from the sweep's ``adaptive:``."""

    confidence: float | None = Field(
        None, gt=0.5, lt=1.0, description="the sequence holds at every look with this probability"
    )
    margin: float | None = Field(None, ge=0.0, lt=1.0, description="equivalence margin on the primary metric")
    min_items: int | None = Field(None, ge=1, description="never decide on fewer paired items")
    max_items: int | None = Field(None, ge=1, description="stop as undecided here (default: every item)")
    round: int | None = Field(None, ge=1, description="items per round: the comparison is looked at after each")
    method: Literal["betting", "bernstein"] | None = None
    enabled: bool = Field(True, description="false (or `adaptive: false`): this benchmark runs in full")


class AdaptiveSpec(_Strict):
    """Stop each variant × benchmark comparison as soon as it is decided (anytime-valid; see docs/adaptive.md)."""

    confidence: float = Field(
        0.95, gt=0.5, lt=1.0, description="the sequence holds at every look with this probability"
    )
    margin: float = Field(0.02, ge=0.0, lt=1.0, description="equivalence margin on the primary metric (e.g. 0.02)")
    min_items: int = Field(100, ge=1, description="never decide on fewer paired items")
    max_items: int | None = Field(None, ge=1, description="stop as undecided here (default: every item)")
    round: int = Field(50, ge=1, description="items per round: the comparison is looked at after each")
    method: Literal["betting", "bernstein"] = Field(
        "betting", description="betting (hedged capital, tighter) or bernstein (empirical Bernstein, closed form)"
    )

    def merged(self, override: AdaptiveOverride | None) -> AdaptiveSpec:
        """These settings with a benchmark's own fields on top."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True, exclude={"enabled"}))

    @model_validator(mode="after")
    def _items_in_order(self) -> AdaptiveSpec:
        if self.max_items is not None and self.max_items < self.min_items:
            raise ValueError(f"max_items ({self.max_items}) is below min_items ({self.min_items}): raise max_items")
        return self


class BenchmarkSpec(_Strict):
    name: str = Field(description="a built-in benchmark, or the name inside `definition`")
    judges: list[str] = Field(
        default_factory=list,
        description="names of the sweep's judges that judge this benchmark's answers (open-ended benchmarks)",
    )
    judge: str | None = Field(
        None, description="the judge whose labels give the metrics (default: the first of `judges`)"
    )
    definition: str | None = Field(None, description="path of your own benchmark definition file (YAML)")
    alias: str | None = Field(None, description="name of this entry in results (to run one benchmark twice)")
    limit: int | None = Field(None, ge=1, description="deterministic subset of this many items")
    max_new_tokens: int | None = Field(
        None, ge=1, le=4096, description="default: the definition's max_new_tokens, then generation.max_new_tokens"
    )
    options: dict[str, Any] = Field(default_factory=dict)
    adaptive: AdaptiveOverride | None = Field(
        None,
        description="false: run this benchmark in full in an adaptive sweep; true or settings: adaptive (settings "
        "over the sweep's adaptive:)",
    )

    @field_validator("adaptive", mode="before")
    @classmethod
    def _adaptive_switch(cls, value: Any) -> Any:
        """``adaptive: true`` / ``false`` are the settings ``{}`` / ``{enabled: false}``."""
        if isinstance(value, bool):
            return {"enabled": value}
        return value

    _alias = field_validator("alias")(lambda cls, v: v if v is None else _check_name(v))
    _bname = field_validator("name")(_check_name)

    @property
    def run_name(self) -> str:
        """The name results, shards and MLflow runs use."""
        return self.alias or self.name


class JudgeSpec(_Strict):
    """One judge of open-ended answers (see ``cluster/judges/kinds.py`` for the kinds)."""

    name: str
    kind: str = Field(description="rule, model or endpoint (the judge registry)")
    mode: Literal["three_way", "binary"] = Field(
        "three_way", description="rule: full/partial/compliance or refusal/compliance"
    )
    template: str | dict[str, str] | None = Field(
        None,
        description="judge template (built-in name or YAML file), or benchmark -> template; default: the template "
        "the benchmark names, else the built-in written for it",
    )
    model: str | None = Field(None, description="model: built-in name, local HF folder or hub id of the judge model")
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    engine: Literal["hf", "vllm"] = "hf"
    decoding: Literal["generate", "choose"] = Field(
        "generate",
        description="model: 'generate' (greedy text, read by the template's parser) or 'choose' (the label whose "
        "words are most likely after the judge prompt: never unreadable; for small judge models)",
    )
    endpoint: EndpointSpec | None = Field(None, description="endpoint: where the OpenAI-compatible server is")
    max_new_tokens: int | None = Field(None, ge=1, le=8192, description="default: the template's")
    batch_size: int = Field(8, ge=1, le=1024, description="model: judge prompts per forward batch")
    shard_size: int | None = Field(None, ge=1, le=100_000, description="answers per judge task (default: the sweep's)")
    resources: PlacementOverride | None = Field(
        None, description="replicas and resources of this judge's workers (default: the kind's CPUs, the sweep's rest)"
    )

    _name = field_validator("name")(_check_name)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        from cluster.judges.kinds import JUDGE_KINDS

        if value not in JUDGE_KINDS:
            raise ValueError(f"unknown judge kind '{value}'; available: {', '.join(JUDGE_KINDS)}")
        return value


class EnsembleSpec(_Strict):
    """A precision ensemble over recipes of one model (applied to every model of the sweep)."""

    name: str
    members: list[str] = Field(min_length=1)
    rule: Literal["majority"] = "majority"

    _name = field_validator("name")(_check_name)


class GenerationSpec(_Strict):
    max_new_tokens: int = Field(32, ge=1, le=4096)
    temperature: float = 0.0
    batch_size: int = Field(8, ge=1, le=1024)

    @field_validator("temperature")
    @classmethod
    def _greedy_only(cls, value: float) -> float:
        if value != 0.0:
            raise ValueError("only greedy decoding is supported; set temperature: 0.0")
        return value


#: RecipeSpec fields that are not part of the quantization recipe (never keyed, never sent as the recipe).
NOT_QUANTIZATION = {"name", "engine", "resources"}


_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_memory(value: int | float | str | None) -> int | None:
    """Bytes from ``8GiB``, ``512MB``, ``2e9`` or a number (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError("memory must be positive")
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([A-Za-z]*)\s*", value)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _MEMORY_UNITS:
        raise ValueError(f"'{value}' is not a memory size; write e.g. 8GiB, 512MiB, 16GB or a number of bytes")
    return int(float(match.group(1)) * _MEMORY_UNITS[unit])


class PlacementOverride(_Strict):
    """Per model or per recipe: the fields given here replace the sweep's ``resources``."""

    replicas: int | None = Field(None, ge=1, le=1024, description="actors serving one variant (data parallel)")
    num_cpus: float | None = Field(None, gt=0, validation_alias=AliasChoices("num_cpus", "num_cpus_per_worker"))
    num_gpus: float | None = Field(None, ge=0, validation_alias=AliasChoices("num_gpus", "num_gpus_per_worker"))
    memory: int | str | None = Field(None, description="memory reserved per replica (8GiB, 512MB or bytes)")
    custom: dict[str, float] | None = Field(None, description="custom Ray resources per replica, e.g. {a100: 1}")
    placement: Literal["pack", "spread"] | None = Field(None, description="pack replicas on few nodes or spread them")

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int | str | None) -> int | None:
        return parse_memory(value)


class ResourcesSpec(_Strict):
    """How every worker pool is placed and how the scheduler treats its work (the sweep default)."""

    replicas: int = Field(1, ge=1, le=1024, description="actors per variant; they pull from one queue")
    num_cpus: float = Field(
        1.0, gt=0, validation_alias=AliasChoices("num_cpus", "num_cpus_per_worker"), description="CPUs per replica"
    )
    num_gpus: float = Field(
        0.0,
        ge=0,
        validation_alias=AliasChoices("num_gpus", "num_gpus_per_worker"),
        description="GPUs per replica; fractions share a GPU, whole numbers above 1 mean tensor parallelism",
    )
    memory: int | str | None = Field(None, description="memory reserved per replica (8GiB, 512MB or bytes)")
    custom: dict[str, float] = Field(default_factory=dict, description="custom Ray resources per replica")
    placement: Literal["pack", "spread"] = Field("pack", description="pack a variant's replicas or spread them")
    max_in_flight: int = Field(
        2,
        ge=1,
        le=64,
        validation_alias=AliasChoices("max_in_flight", "max_in_flight_per_worker"),
        description="shards queued on one replica at a time",
    )
    max_retries: int = Field(2, ge=0, le=20, description="retries of a failed shard before it counts as failed")
    retry_backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles with every attempt")
    shard_timeout_s: float | None = Field(None, gt=0, description="a shard running longer than this is retried")
    load_timeout_s: float | None = Field(
        3600.0, gt=0, description="a replica that has not loaded its variant by then is replaced"
    )
    max_replacements: int = Field(
        3, ge=0, le=100, description="dead replicas replaced per pool before its remaining shards fail"
    )
    max_restarts: int = Field(1, ge=0, le=100, description="Ray restarts of one replica actor before it is replaced")

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int | str | None) -> int | None:
        return parse_memory(value)

    def merged(self, *overrides: PlacementOverride | None) -> ResourcesSpec:
        """These resources with the fields the overrides set (later overrides win)."""
        data = self.model_dump()
        for override in overrides:
            if override is not None:
                data.update({k: v for k, v in override.model_dump().items() if v is not None})
        return ResourcesSpec.model_validate(data)


class TrackingSpec(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; --tracking-uri and MLFLOW_TRACKING_URI win")
    experiment: str = "qtrust"


class StorageSpec(_Strict):
    root: str = Field(
        "qtrust-runs", description="folder or URI (file://, s3://, gs://) holding <sweep>/generations/..."
    )
    response_cache: str | None = Field(
        None,
        description="a folder or URI shared by sweeps: any sweep reuses a stored answer with the same item key",
    )
    variant_cache: str | None = Field(
        None,
        description="where quantized variants are kept: a folder shared by the cluster or an fsspec URL "
        "(s3://, gs://, ...); --variant-cache and $QTRUST_VARIANT_CACHE win; default <cache dir>/variants",
    )

    _locations = field_validator("root", "response_cache", "variant_cache")(_check_location)


class SweepSpec(_Strict):
    """A whole sweep."""

    name: str
    description: str = ""
    models: list[ModelSpec] = Field(min_length=1)
    recipes: list[RecipeSpec] = Field(default_factory=lambda: [RecipeSpec(name="reference")])
    benchmarks: list[BenchmarkSpec] = Field(min_length=1)
    ensembles: list[EnsembleSpec] = Field(default_factory=list)
    judges: list[JudgeSpec] = Field(default_factory=list, description="judges of open-ended answers")
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    shard_size: int = Field(16, ge=1, le=100_000, description="items per shard")
    quality_probe: bool = Field(
        True, description="measure each variant's perplexity on a fixed local text set when it loads"
    )
    adaptive: AdaptiveSpec | None = Field(
        None, description="stop each variant × benchmark comparison once decided (every benchmark unless it says false)"
    )

    _name = field_validator("name")(_check_name)

    def adaptive_for(self, bench: BenchmarkSpec) -> AdaptiveSpec | None:
        """The adaptive settings of one benchmark entry (None: it runs in full)."""
        own = bench.adaptive
        if own is not None and not own.enabled:
            return None
        if self.adaptive is None:
            return None if own is None else AdaptiveSpec().merged(own)
        return self.adaptive.merged(own)

    def variant_name(self, model: ModelSpec, recipe: RecipeSpec) -> str:
        return f"{model.name}-{recipe.name}"

    def recipes_of(self, model: ModelSpec) -> list[RecipeSpec]:
        """The recipes applied to ``model`` (its own ``recipes`` list, else all), in sweep order."""
        if model.recipes is None:
            return list(self.recipes)
        return [r for r in self.recipes if r.name in model.recipes]

    def variant_pairs(self) -> list[tuple[ModelSpec, RecipeSpec]]:
        """Every (model, recipe) pair the sweep evaluates."""
        return [(m, r) for m in self.models for r in self.recipes_of(m)]

    def requested_engine(self, model: ModelSpec, recipe: RecipeSpec) -> str:
        """The engine the sweep asks for one variant: the recipe's, else the model's."""
        if model.engine == "fake":
            return "fake"
        return recipe.engine or model.engine

    def resources_for(self, model: ModelSpec, recipe: RecipeSpec) -> ResourcesSpec:
        """The resources of one variant's pool: the sweep's, then the model's, then the recipe's fields."""
        return self.resources.merged(model.resources, recipe.resources)

    def recipe(self, name: str) -> RecipeSpec:
        return next(r for r in self.recipes if r.name == name)

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)


ModelSpec.model_rebuild()


RecipeSpec.model_rebuild()


JudgeSpec.model_rebuild()


def _format_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at the parent of ``loc`` (for 'unknown field' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return list(current.model_fields) if current is not None else []


def pydantic_problems(error: ValidationError) -> list[str]:
    """One line per problem pydantic found, naming the field path (credentials in quoted URIs redacted)."""
    problems = []
    for e in error.errors():
        loc = tuple(e["loc"])
        where = _format_location(loc)
        if e["type"] == "extra_forbidden":
            allowed = _allowed_fields(SweepSpec, loc)
            hint = f"; allowed fields: {', '.join(allowed)}" if allowed else ""
            problems.append(f"{where}: unknown field{hint}")
        elif e["type"] == "missing":
            problems.append(f"{where}: required field is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            value = e.get("input")
            if isinstance(value, str):
                from cluster.storage.uri import redact

                value = redact(value)  # a URI's credentials never reach a message
            shown = f" (got {value!r})" if isinstance(value, (str, int, float, bool)) and repr(value) not in msg else ""
            problems.append(f"{where}: {msg}{shown}")
    return problems


def available_builtin_models() -> list[str]:
    return sorted(BUILTIN_MODELS)


def duplicates(values: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({v for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]
