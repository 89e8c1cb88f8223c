"""How a sweep names its variants for people: short names and each model's reference variant."""

from __future__ import annotations

from jobs.plan.build import Plan


def short_name(name: str, model: str, n_models: int) -> str:
    """A variant's or ensemble's name without the model prefix the sweep repeats (kept with several models)."""
    if n_models == 1 and name.startswith(f"{model}-") and len(name) > len(model) + 1:
        return name[len(model) + 1 :]
    return name


def reference_variants(plan: Plan) -> dict[str, str]:
    """model -> its reference variant: the unquantized one (method none), else its most precise."""
    out: dict[str, str] = {}
    for model in plan.spec.models:
        variants = [v for v in plan.variants.values() if v.model.name == model.name]
        if not variants:
            continue
        plain = [v for v in variants if not v.recipe.quant_method.quantizes]
        out[model.name] = (plain[0] if plain else max(variants, key=lambda v: v.precision_bits)).name
    return out


def ensemble_names(plan: Plan) -> list[str]:
    """The full names of the sweep's precision ensembles (``<model>-<ensemble>``)."""
    return [f"{model.name}-{ens.name}" for model in plan.spec.models for ens, _members in plan.ensembles_of(model)]


def short_names(plan: Plan) -> dict[str, str]:
    """Full variant or ensemble name -> the short name tables and run names show."""
    n_models = len(plan.spec.models)
    names = {v.name: short_name(v.name, v.model.name, n_models) for v in plan.variants.values()}
    for model in plan.spec.models:
        for ens, _members in plan.ensembles_of(model):
            full = f"{model.name}-{ens.name}"
            names[full] = short_name(full, model.name, n_models)
    return names
