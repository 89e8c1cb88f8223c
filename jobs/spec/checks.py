"""Checks of a parsed sweep that one field's validator cannot make: names across lists, judges,
engines, recipes against their models and local checkpoints (no model loads).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import (
    ValidationError,
)

from cluster.models.sources import validate_model_source
from jobs.spec.judge_checks import judge_problems
from jobs.spec.schema import (
    ModelSpec,
    RecipeSpec,
    SweepSpec,
    available_builtin_models,
    duplicates,
    pydantic_problems,
)
from trust.benchmarks.catalog import (
    UnknownBenchmarkError,
    available_benchmarks,
    get_benchmark,
)
from trust.benchmarks.declarative import DefinitionError


def cross_check(spec: SweepSpec) -> list[str]:
    """Problems that involve several fields, found without loading any model or data."""
    problems: list[str] = []
    for label, names in (
        ("models", [m.name for m in spec.models]),
        ("recipes", [r.name for r in spec.recipes]),
        ("benchmarks", [b.run_name for b in spec.benchmarks]),
        ("ensembles", [e.name for e in spec.ensembles]),
    ):
        for dup in duplicates(names):
            problems.append(f"{label}: the name '{dup}' is used more than once; give each entry its own name")
    recipe_names = [r.name for r in spec.recipes]
    for i, model in enumerate(spec.models):
        for j, name in enumerate(model.recipes or []):
            if name not in recipe_names:
                problems.append(
                    f"models[{i}].recipes[{j}]: '{name}' is not a recipe of this sweep; recipes: {', '.join(recipe_names)}"
                )
    variants = [spec.variant_name(m, r) for m, r in spec.variant_pairs()]
    for dup in duplicates(variants):
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
            for line in pydantic_problems(err):
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
        for dup in duplicates(ens.members):
            problems.append(f"ensembles[{i}].members: '{dup}' is listed more than once")
        if all(m in recipe_names for m in ens.members) and not any(
            set(ens.members) <= {r.name for r in spec.recipes_of(m)} for m in spec.models
        ):
            problems.append(
                f"ensembles[{i}]: no model has every member recipe ({', '.join(ens.members)}); check models[].recipes"
            )
    problems.extend(adaptive_problems(spec))
    problems.extend(judge_problems(spec))
    problems.extend(recipe_problems(spec))
    problems.extend(engine_problems(spec))
    return problems


def adaptive_problems(spec: SweepSpec) -> list[str]:
    """A benchmark's own ``adaptive:`` fields over the sweep's must still make a valid rule."""
    problems = []
    for i, bench in enumerate(spec.benchmarks):
        settings = spec.adaptive_for(bench)
        if settings is None or settings.max_items is None or settings.max_items >= settings.min_items:
            continue
        own = bench.adaptive
        where = f"benchmarks[{i}].adaptive" if own is not None and own.max_items is not None else "adaptive"
        problems.append(
            f"{where}.max_items: {settings.max_items} is below min_items ({settings.min_items}) for benchmark "
            f"'{bench.run_name}'; raise max_items or lower min_items"
        )
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
    if not recipe.quant_method.prequantized:
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
    from cluster.quantization.checks import (
        read_model_config,
        recipe_shape_problems,
        shape_from_config,
    )

    problems: list[str] = []
    reported: set[str] = set()  # one message per method
    for j, recipe in enumerate(spec.recipes):
        message = method_problem(recipe)
        name = recipe.method
        if message and name not in reported:
            reported.add(name)
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
            if recipe.quant_method.prequantized:
                problems.extend(f"variant {variant}: {p}" for p in _prequantized_problems(model, recipe))
            elif shape is not None:
                problems.extend(f"variant {variant}: {p}" for p in recipe_shape_problems(recipe, shape))
                if config and config.get("quantization_config") and recipe.quant_method.quantizes:
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
