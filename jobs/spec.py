"""The sweep spec: a YAML file validated by pydantic before Ray starts or a model loads.

A sweep crosses ``models`` × ``recipes`` (the *variants*, named ``<model>-<recipe>``) × ``benchmarks``
and adds precision ``ensembles`` over recipes of the same model. :func:`load_spec` returns a
:class:`SweepSpec` or raises :class:`SpecError` holding one human-readable line per problem, each
naming the field path and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from cluster.engines.hf_settings import HFSettings
from cluster.engines.vllm_settings import VLLMSettings
from cluster.judges.endpoint import EndpointSpec
from cluster.models.builtin import BUILTIN_MODELS
from cluster.models.sources import validate_model_source
from cluster.quantization.recipes import QuantRecipe
from jobs.recipe_grid import expand_recipe_grids
from trust.benchmarks.declarative import DefinitionError
from trust.benchmarks.registry import UnknownBenchmarkError, available_benchmarks, get_benchmark

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME_HELP = "letters, digits, '_', '.', '-' (starting with a letter or digit, at most 64 characters)"


class SpecError(Exception):
    """A sweep spec that cannot be run. ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
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
    from cluster.storage_uri import location_problem

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
    resources: "PlacementOverride | None" = Field(
        None, description="replicas and resources of this model's workers (overrides the sweep's resources)"
    )

    _name = field_validator("name")(_check_name)


class RecipeSpec(QuantRecipe):
    """A quantization recipe with the name it carries in variant names (``<model>-<name>``)."""

    name: str
    engine: Literal["auto", "hf", "vllm"] | None = Field(
        None, description="engine for this recipe's variants, instead of the model's engine"
    )
    resources: "PlacementOverride | None" = Field(
        None, description="replicas and resources of this recipe's workers (overrides the model's and the sweep's)"
    )

    _name = field_validator("name")(_check_name)

    def key_fields(self) -> dict[str, object]:
        """The quantization fields only: the engine is keyed on its own (see ``jobs.plan.item_key``)."""
        return self.model_dump(mode="json", exclude=NOT_QUANTIZATION)

    def quant_recipe(self) -> QuantRecipe:
        """The plain recipe the worker rebuilds (no name, no engine, no resources)."""
        return QuantRecipe.model_validate(self.model_dump(exclude=NOT_QUANTIZATION))


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

    _alias = field_validator("alias")(lambda cls, v: v if v is None else _check_name(v))
    _bname = field_validator("name")(_check_name)

    @property
    def run_name(self) -> str:
        """The name results, shards and MLflow runs use."""
        return self.alias or self.name


class JudgeSpec(_Strict):
    """One judge of open-ended answers (see ``cluster/judges/registry.py`` for the kinds)."""

    name: str
    kind: str = Field(description="rule, model or endpoint (the judge registry)")
    mode: Literal["three_way", "binary"] = Field("three_way", description="rule: full/partial/compliance or refusal/compliance")
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
    resources: "PlacementOverride | None" = Field(
        None, description="replicas and resources of this judge's workers (default: the kind's CPUs, the sweep's rest)"
    )

    _name = field_validator("name")(_check_name)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        from cluster.judges.registry import JUDGE_KINDS

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

_MEMORY_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
                 "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


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
        2, ge=1, le=64, validation_alias=AliasChoices("max_in_flight", "max_in_flight_per_worker"),
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

    def merged(self, *overrides: PlacementOverride | None) -> "ResourcesSpec":
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

    _name = field_validator("name")(_check_name)

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


def _pydantic_problems(error: ValidationError) -> list[str]:
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
                from cluster.storage_uri import redact

                value = redact(value)  # a URI's credentials never reach a message
            shown = f" (got {value!r})" if isinstance(value, (str, int, float, bool)) and repr(value) not in msg else ""
            problems.append(f"{where}: {msg}{shown}")
    return problems


def _duplicates(values: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({v for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]


def cross_check(spec: SweepSpec) -> list[str]:
    """Problems that involve several fields, found without loading any model or data."""
    problems: list[str] = []
    for label, names in (
        ("models", [m.name for m in spec.models]),
        ("recipes", [r.name for r in spec.recipes]),
        ("benchmarks", [b.run_name for b in spec.benchmarks]),
        ("ensembles", [e.name for e in spec.ensembles]),
    ):
        for dup in _duplicates(names):
            problems.append(f"{label}: the name '{dup}' is used more than once; give each entry its own name")
    recipe_names = [r.name for r in spec.recipes]
    for i, model in enumerate(spec.models):
        for j, name in enumerate(model.recipes or []):
            if name not in recipe_names:
                problems.append(
                    f"models[{i}].recipes[{j}]: '{name}' is not a recipe of this sweep; recipes: {', '.join(recipe_names)}"
                )
    variants = [spec.variant_name(m, r) for m, r in spec.variant_pairs()]
    for dup in _duplicates(variants):
        problems.append(
            f"variants: two model × recipe pairs are both named '{dup}' (variant = <model>-<recipe>); rename a model or recipe"
        )
    for i, model in enumerate(spec.models):
        message = validate_model_source(model.source)
        if message:
            problems.append(f"models[{i}].source: {message}")
    known = available_benchmarks()
    for i, bench in enumerate(spec.benchmarks):
        try:
            benchmark = get_benchmark(bench.name, bench.options, bench.definition)
        except UnknownBenchmarkError:
            problems.append(
                f"benchmarks[{i}].name: unknown benchmark '{bench.name}'; available: {', '.join(known)} "
                "(or give your own file in 'definition')"
            )
        except DefinitionError as err:
            problems.extend(f"benchmarks[{i}].definition: {err.where}: {p}" for p in err.problems)
        except ValidationError as err:
            for line in _pydantic_problems(err):
                problems.append(f"benchmarks[{i}].options.{line}")
        else:
            if bench.definition and benchmark.name != bench.name:
                problems.append(
                    f"benchmarks[{i}].name: '{bench.name}' differs from the name in {bench.definition} ('{benchmark.name}')"
                )
    for i, ens in enumerate(spec.ensembles):
        for j, member in enumerate(ens.members):
            if member not in recipe_names:
                problems.append(
                    f"ensembles[{i}].members[{j}]: '{member}' is not a recipe of this sweep; recipes: {', '.join(recipe_names)}"
                )
        for dup in _duplicates(ens.members):
            problems.append(f"ensembles[{i}].members: '{dup}' is listed more than once")
        if all(m in recipe_names for m in ens.members) and not any(
            set(ens.members) <= {r.name for r in spec.recipes_of(m)} for m in spec.models
        ):
            problems.append(
                f"ensembles[{i}]: no model has every member recipe ({', '.join(ens.members)}); check models[].recipes"
            )
    problems.extend(judge_problems(spec))
    problems.extend(recipe_problems(spec))
    problems.extend(engine_problems(spec))
    return problems


def judge_problems(spec: SweepSpec) -> list[str]:
    """Judges that cannot run: missing fields per kind, unknown names, templates that do not exist."""
    from cluster.judges.registry import judge_kind
    from trust.judges.templates import TemplateError

    problems: list[str] = []
    names = [j.name for j in spec.judges]
    for dup in _duplicates(names):
        problems.append(f"judges: the name '{dup}' is used more than once; give each judge its own name")
    for i, judge in enumerate(spec.judges):
        if judge.kind == "model" and not judge.model:
            problems.append(f"judges[{i}].model: a model judge needs 'model' (a built-in name, local folder or hub id)")
        if judge.kind == "model" and judge.model:
            message = validate_model_source(judge.model)
            if message:
                problems.append(f"judges[{i}].model: {message}")
        if judge.kind == "endpoint" and judge.endpoint is None:
            problems.append(f"judges[{i}].endpoint: an endpoint judge needs 'endpoint' (base_url, model, api_key_env)")
        if judge.kind != "endpoint" and judge.endpoint is not None:
            problems.append(f"judges[{i}].endpoint: only endpoint judges take 'endpoint'; remove it or set kind: endpoint")
        if judge.decoding == "choose" and judge.kind != "model":
            problems.append(f"judges[{i}].decoding: 'choose' scores labels by log-likelihood, which only model judges "
                            "offer; use decoding: generate")
        if judge.kind == "rule" and judge.template is not None:
            problems.append(f"judges[{i}].template: the rule judge reads no template; remove it")
    by_name = {j.name: j for j in spec.judges}
    for i, bench in enumerate(spec.benchmarks):
        for j, name in enumerate(bench.judges):
            if name not in by_name:
                problems.append(
                    f"benchmarks[{i}].judges[{j}]: '{name}' is not a judge of this sweep; "
                    f"judges: {', '.join(by_name) or '(none: add a judges: section)'}"
                )
        if bench.judge is not None and bench.judge not in bench.judges:
            problems.append(f"benchmarks[{i}].judge: '{bench.judge}' must be one of this benchmark's judges ({', '.join(bench.judges) or 'none'})")
        if not bench.judges:
            continue
        try:
            benchmark = get_benchmark(bench.name, bench.options, bench.definition)
        except Exception:  # noqa: BLE001 - reported by cross_check already
            continue
        if benchmark.task != "generate":
            problems.append(f"benchmarks[{i}].judges: {bench.run_name} is scored by log-likelihood; only open answers are judged")
            continue
        for name in bench.judges:
            judge = by_name.get(name)
            if judge is None or not judge_kind(judge.kind).needs_template:
                continue
            try:
                from jobs.judging import template_for

                template_for(judge, benchmark)
            except TemplateError as err:
                problems.append(f"judges.{name}.template (for {bench.run_name}): {err}")
    return problems


def engine_problems(spec: SweepSpec) -> list[str]:
    """Variants whose engine cannot run them here, and vLLM settings that do not fit the resources."""
    from cluster.engines.selection import engine_problem, vllm_installed

    problems: list[str] = []
    installed = vllm_installed()
    for i, model in enumerate(spec.models):
        seen: set[str] = set()
        for recipe in spec.recipes_of(model):
            requested = spec.requested_engine(model, recipe)
            if requested == "vllm" or (requested == "auto" and installed):
                gpus = spec.resources_for(model, recipe).num_gpus
                for p in model.vllm.placement_problems(gpus):
                    if p not in seen:
                        seen.add(p)
                        problems.append(f"models[{i}].vllm: {p}")
        for recipe in spec.recipes_of(model):
            info = local_checkpoint_info(model, recipe)
            method = info.method if info is not None else None
            message = engine_problem(
                spec.requested_engine(model, recipe), recipe, checkpoint_method=method, installed=installed
            )
            if message:
                where = "recipe's" if recipe.engine else "model's"
                problems.append(f"variant {spec.variant_name(model, recipe)} ({where} engine: vllm): {message}")
    return problems


def local_checkpoint_info(model: ModelSpec, recipe: RecipeSpec):  # -> PrequantizedInfo | None
    """What a local prequantized checkpoint holds (None for other recipes, hub ids and unreadable
    folders, which :func:`recipe_problems` reports)."""
    if recipe.method != "prequantized":
        return None
    folder = Path(recipe.source or model.source).expanduser()
    if not folder.is_dir():
        return None
    from cluster.quantization.prequantized import inspect_checkpoint
    from cluster.quantization.targets import QuantizationError

    try:
        return inspect_checkpoint(folder)
    except QuantizationError:
        return None


def recipe_problems(spec: SweepSpec) -> list[str]:
    """Recipes that cannot run here or on their models: each line names the variant and what works."""
    from cluster.quantization.availability import method_problem
    from cluster.quantization.checks import read_model_config, recipe_shape_problems, shape_from_config

    problems: list[str] = []
    reported_methods: set[str] = set()
    for j, recipe in enumerate(spec.recipes):
        message = method_problem(recipe)
        if message and recipe.method not in reported_methods:
            reported_methods.add(recipe.method)
            problems.append(f"recipes[{j}] ({recipe.name}): {message}")
        if recipe.source is not None:
            users = [m.name for m in spec.models if recipe in spec.recipes_of(m)]
            if len(users) > 1:
                problems.append(
                    f"recipes[{j}] ({recipe.name}): a prequantized checkpoint given in 'source' belongs to one model, "
                    f"but models {', '.join(users)} use it; list it in only one model's 'recipes'"
                )
        if recipe.calibration is not None:
            message = _calibration_problem(recipe.calibration.source)
            if message:
                problems.append(f"recipes[{j}] ({recipe.name}).calibration.source: {message}")
    for model in spec.models:
        config = read_model_config(model.source, model.revision)
        shape = shape_from_config(config) if config else None
        for recipe in spec.recipes_of(model):
            variant = spec.variant_name(model, recipe)
            if recipe.method == "prequantized":
                problems.extend(f"variant {variant}: {p}" for p in _prequantized_problems(model, recipe))
            elif shape is not None:
                problems.extend(f"variant {variant}: {p}" for p in recipe_shape_problems(recipe, shape))
                if config and config.get("quantization_config") and recipe.method != "none":
                    problems.append(
                        f"variant {variant}: model {model.name} is already quantized "
                        f"({config['quantization_config'].get('quant_method', '?')}); use a recipe with method: "
                        "prequantized for it (models[].recipes selects the recipes of one model)"
                    )
    return problems


def _calibration_problem(source: str) -> str | None:
    if source == "builtin":
        return None
    if source.startswith("benchmark:"):
        name = source.removeprefix("benchmark:")
        if name not in available_benchmarks():
            return f"unknown benchmark '{name}'; available: {', '.join(available_benchmarks())}"
        return None
    path = Path(source).expanduser()
    if not path.is_file():
        return f"calibration text file {source!r} not found; use 'builtin', 'benchmark:<name>' or an existing text file"
    return None


def _prequantized_problems(model: ModelSpec, recipe: RecipeSpec) -> list[str]:
    from cluster.quantization.prequantized import inspect_checkpoint
    from cluster.quantization.targets import QuantizationError

    source = recipe.source or model.source
    folder = Path(source).expanduser()
    if source in available_builtin_models():
        return [
            f"built-in model {source!r} is stored dequantized; use method: none (or a quantizing recipe), "
            "not prequantized"
        ]
    if not folder.is_dir():
        message = validate_model_source(source)
        return [f"prequantized source: {message}"] if message else []  # hub ids are checked when loaded
    try:
        info = inspect_checkpoint(folder)
    except QuantizationError as err:
        return [str(err)]
    if recipe.bits is not None and info.bits is not None and recipe.bits != info.bits:
        return [f"bits is {recipe.bits} but the checkpoint's config says {info.bits}; drop bits or fix it"]
    return []


def parse_spec(data: Any, source: str = "<sweep>") -> SweepSpec:
    """Validate an already-parsed YAML document."""
    if not isinstance(data, dict):
        raise SpecError(source, ["the file must hold a mapping with at least 'name', 'models' and 'benchmarks'"])
    data = expand_recipe_grids(data)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(source, _pydantic_problems(err)) from None
    problems = cross_check(spec)
    if problems:
        raise SpecError(source, problems)
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; raise :class:`SpecError` listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), ["file not found; pass the path of a sweep YAML file (see examples/demo.yaml)"])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(str(path), [f"{where}not valid YAML ({problem})"]) from None
    _resolve_definition_paths(data, path.parent)
    return parse_spec(data, str(path))


def available_builtin_models() -> list[str]:
    return sorted(BUILTIN_MODELS)


def _resolve_definition_paths(data: Any, base: Path) -> None:
    """Make relative file paths (benchmark definitions, calibration texts) relative to the sweep file."""
    if not isinstance(data, dict):
        return
    for recipe in data.get("recipes") or []:
        calibration = recipe.get("calibration") if isinstance(recipe, dict) else None
        source = calibration.get("source") if isinstance(calibration, dict) else None
        if isinstance(source, str) and source != "builtin" and not source.startswith("benchmark:"):
            candidate = Path(source).expanduser()
            if not candidate.is_absolute():
                calibration["source"] = str((base / candidate).resolve())
    if not isinstance(data.get("benchmarks"), list):
        return
    for bench in data["benchmarks"]:
        if isinstance(bench, dict) and isinstance(bench.get("definition"), str):
            candidate = Path(bench["definition"]).expanduser()
            if not candidate.is_absolute():
                bench["definition"] = str((base / candidate).resolve())


def dump_spec(spec: SweepSpec) -> str:
    """The resolved spec as YAML (every default written out)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


ModelSpec.model_rebuild()
RecipeSpec.model_rebuild()
JudgeSpec.model_rebuild()
