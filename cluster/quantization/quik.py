"""QUIK: 4-bit weights *and* activations, with a few outlier input features kept in full precision.

Written from Ashkboos et al., "QUIK: Towards End-to-End 4-Bit Inference on Generative Large
Language Models" (arXiv 2310.09259); the tensor work is in :mod:`cluster.quantization.quik_linear`.

Build (:func:`quantize_quik`), one decoder block at a time on calibration text
(:func:`cluster.quantization.layer_inputs.sequential_hessians`, so each block is fitted to what its
already-quantized predecessors produce), for every linear layer of the target plan:

1. **Outliers**: the layer's ``k`` input features with the largest absolute activation seen on the
   calibration tokens (the per-feature ``max |x_j|`` statistic, as the paper's activation scales)
   are kept in full precision, weights and activations alike. ``k`` is ``outlier_features`` (by
   default 1/16 of the model's hidden size, at most 256: the paper's 256 of 4096); sensitive
   layers get ``sensitive_outlier_features`` (by default ``k`` scaled by their input width over
   the hidden size, as the paper does for LLaMA's down-projection).
2. **Weights**: GPTQ with symmetric per-output-row scales (each row's range clipped where that
   lowers its ``diag(H)``-weighted rounding error) over the non-outlier columns, largest
   ``diag(H)`` first, with the outlier columns last: they are not rounded but absorb the error of
   the others (``compensate_outliers: false`` leaves them exactly as they were). ``bits`` for
   most layers, ``sensitive_bits`` (8) for ``sensitive_modules`` (``down_proj``).
3. The dense dequantized weights are saved (``storage: simulated``) with the tokenizer, and
   ``qtrust_quik.json`` records each layer's outlier features and weight/activation bits.

Load (:func:`load_quik`): the dense checkpoint, plus a forward pre-hook on every recorded layer
that quantizes its input per token (non-outlier features to ``activation_bits``, or
``sensitive_bits`` on sensitive layers; asymmetric as QUIK's kernels by default) and dequantizes
it again. Only the Hugging Face engine runs it (vLLM would not quantize activations).

This module imports neither torch nor transformers at its top level: recipe validation imports it
for :class:`QuikParams` and :func:`shape_problems`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cluster.quantization.loading import LoadRequest, TransformersLoader, folder_size_bytes
from cluster.quantization.recipes import QuantRecipe, check_patterns

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cluster.quantization.checks import ModelShape
    from cluster.quantization.targets import TargetPlan

log = logging.getLogger(__name__)

#: The file in a QUIK checkpoint folder that says which layers quantize which activations.
QUIK_FILE = "qtrust_quik.json"
QUIK_FORMAT = "qtrust-quik"
QUIK_FORMAT_VERSION = 1
#: The paper's outlier count (for 4096-wide models) and its share of the hidden size.
PAPER_OUTLIERS = 256
PAPER_OUTLIER_SHARE = 16  # 4096 / 256
#: Bits of a full-precision outlier weight and of a per-row scale in a real QUIK checkpoint.
FP_BITS = 16


class QuikParams(BaseModel):
    """The ``params`` block of a ``quik`` recipe (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outlier_features: int | None = Field(
        None,
        ge=0,
        description="input features per layer kept in 16 bits; null: hidden_size/16, at most 256 "
        "(the paper's 256 of 4096)",
    )
    sensitive_outlier_features: int | None = Field(
        None,
        ge=0,
        description="outlier features of sensitive layers; null: outlier_features × the layer's input "
        "width / hidden_size (the paper's down_proj rule)",
    )
    activation_bits: int = Field(4, ge=4, le=8, description="bits of the non-outlier activations, per token")
    activation_symmetric: bool = Field(
        False, description="symmetric per-token activation scales (default: asymmetric, as QUIK's kernels)"
    )
    sensitive_modules: list[str] = Field(
        default_factory=lambda: ["down_proj"],
        description="module patterns quantized with sensitive_bits (weights and activations)",
    )
    sensitive_bits: int = Field(
        8, ge=4, le=8, description="weight and activation bits of sensitive_modules (never below bits, activation_bits)"
    )
    damp: float = Field(0.01, gt=0, le=1, description="GPTQ damping, a share of the mean Hessian diagonal")
    clip_weights: bool = Field(
        True, description="search each weight row's clipping range (the paper's weight clipping)"
    )
    compensate_outliers: bool = Field(
        True, description="GPTQ spreads rounding error onto the full-precision outlier columns (the paper's order)"
    )

    _check_modules = field_validator("sensitive_modules")(lambda cls, value: check_patterns(value))


def default_outliers(hidden_size: int) -> int:
    """The default outlier count of a model with ``hidden_size``: 1/16 of it, at most 256."""
    return max(1, min(PAPER_OUTLIERS, hidden_size // PAPER_OUTLIER_SHARE))


def shape_problems(recipe: QuantRecipe, shape: ModelShape) -> list[str]:
    """Why ``recipe`` cannot run on a model of ``shape``: outlier counts must be below the input widths."""
    params: QuikParams = recipe.method_params()
    problems = []
    widths = shape.input_widths
    count = params.outlier_features
    if count is not None:
        for what, width in widths.items():
            if count >= width:
                problems.append(
                    f"params.outlier_features {count} must be below {what} {width} "
                    f"(QUIK keeps that many input features of each layer in 16 bits); "
                    f"use at most {width - 1}, e.g. {default_outliers(widths.get('hidden_size', width))}"
                )
    sensitive = params.sensitive_outlier_features
    if sensitive is not None and params.sensitive_modules and widths:
        what, width = max(widths.items(), key=lambda item: item[1])
        if sensitive >= width:
            problems.append(
                f"params.sensitive_outlier_features {sensitive} must be below {what} {width}; use at most {width - 1}"
            )
    return problems


# ------------------------------------------------------------------------------- build


def _is_sensitive(name: str, params: QuikParams) -> bool:
    from cluster.quantization.targets import matches

    return any(matches(name, pattern) for pattern in params.sensitive_modules)


def layer_settings(
    name: str, in_features: int, hidden_size: int, recipe_bits: int, params: QuikParams
) -> tuple[int, int, int]:
    """``(outlier count, weight bits, activation bits)`` of layer ``name`` with ``in_features`` inputs.

    Raises:
        QuantizationError: the outlier count is not below ``in_features``.
    """
    from cluster.quantization.targets import QuantizationError

    base = params.outlier_features if params.outlier_features is not None else default_outliers(hidden_size)
    if _is_sensitive(name, params):
        count = params.sensitive_outlier_features
        if count is None:
            count = round(base * in_features / hidden_size)
        weight_bits, act_bits = (
            max(recipe_bits, params.sensitive_bits),
            max(params.activation_bits, params.sensitive_bits),
        )
        which = "sensitive_outlier_features"
    else:
        count, weight_bits, act_bits = base, recipe_bits, params.activation_bits
        which = "outlier_features"
    if count >= in_features:
        raise QuantizationError(
            f"params.{which}: layer {name!r} has {in_features} input features, so at most {in_features - 1} "
            f"can stay in 16 bits (got {count})"
        )
    return count, weight_bits, act_bits


def layer_bits(out_features: int, in_features: int, outliers: int, weight_bits: int) -> int:
    """Storage bits of a real QUIK layer: quantized weights, 16-bit outlier columns, one 16-bit scale per row."""
    return out_features * ((in_features - outliers) * weight_bits + outliers * FP_BITS + FP_BITS)


class _AbsMax:
    """Forward pre-hooks keeping each layer's per-feature ``max |x|`` until the layer is done."""

    def __init__(self) -> None:
        self.stats: dict[str, torch.Tensor] = {}
        self.done: set[str] = set()

    def hook(self, name: str):
        import torch

        def record(_module: nn.Module, args: tuple) -> None:
            if name in self.done:
                return
            x = args[0].detach()
            m = x.reshape(-1, x.shape[-1]).abs().amax(dim=0).to(torch.float32)
            self.stats[name] = torch.maximum(self.stats[name], m) if name in self.stats else m

        return record

    def take(self, name: str) -> torch.Tensor:
        self.done.add(name)
        return self.stats.pop(name)


def hidden_size(model: nn.Module, in_widths: list[int]) -> int:
    """The model's hidden size (its config's, else the most common input width of its layers)."""
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    value = getattr(text, "hidden_size", None)
    if isinstance(value, int) and value > 0:
        return value
    return Counter(in_widths).most_common(1)[0][0]


def shared_input_groups(
    hessians: dict[str, torch.Tensor], stats: dict[str, torch.Tensor], settings: dict[str, tuple[int, int, int]]
) -> list[list[str]]:
    """The block's layers grouped by identical inputs and settings (q/k/v, gate/up): each group's
    stacked weight rows go through GPTQ together, which gives exactly the per-layer result (rows
    are independent given ``H``, the outliers and the column order) with fewer column passes."""
    import torch

    groups: list[list[str]] = []
    for name in hessians:
        for group in groups:
            first = group[0]
            same = settings[first] == settings[name] and torch.equal(stats[first], stats[name])
            if same and torch.equal(hessians[first], hessians[name]):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def quantize_quik(
    model: nn.Module,
    tokenizer: Any,
    recipe: QuantRecipe,
    plan: TargetPlan,
    calibration_texts: list[str] | None,
    out_dir: Path,
) -> dict[str, str]:
    """The ``build`` of method ``quik``: quantize ``model`` in place and save it with ``tokenizer`` in ``out_dir``.

    Raises:
        ValueError: no calibration text.
        QuantizationError: a plan layer lies outside the decoder blocks, or an outlier count does
            not fit a layer.
    """
    import torch

    from cluster.quantization.layer_inputs import calibration_ids, check_inside_blocks, sequential_hessians
    from cluster.quantization.quik_linear import quantize_layer, relative_output_error
    from cluster.quantization.targets import QuantizationError

    params: QuikParams = recipe.method_params()
    input_ids = calibration_ids("quik", tokenizer, calibration_texts, recipe)
    check_inside_blocks("quik", model, list(plan.layers))
    modules = dict(model.named_modules())
    hidden = hidden_size(model, [modules[name].in_features for name in plan.layers])
    settings = {
        name: layer_settings(name, modules[name].in_features, hidden, quant.bits, params)
        for name, quant in plan.layers.items()
    }
    started = time.perf_counter()
    absmax = _AbsMax()
    handles = [modules[name].register_forward_pre_hook(absmax.hook(name)) for name in plan.layers]
    layers: dict[str, dict[str, Any]] = {}
    errors: list[float] = []
    total_bits = total_weights = 0
    try:
        with torch.no_grad():
            for prefix, hessians in sequential_hessians(model, input_ids, list(plan.layers)):
                stats = {name: absmax.take(name) for name in hessians}
                for group in shared_input_groups(hessians, stats, settings):
                    count, weight_bits, act_bits = settings[group[0]]
                    h = hessians[group[0]]
                    originals = [modules[name].weight.data for name in group]
                    result = quantize_layer(
                        torch.cat(originals),
                        h,
                        stats[group[0]],
                        count,
                        weight_bits,
                        damp=params.damp,
                        clip=params.clip_weights,
                        compensate_outliers=params.compensate_outliers,
                        measure_error=False,
                    )
                    news = result.weight.split([w.shape[0] for w in originals])
                    for name, original, new in zip(group, originals, news, strict=True):
                        error = relative_output_error(original, new, h)
                        original.copy_(new.to(original.dtype))
                        errors.append(error)
                        out_features, in_features = original.shape
                        total_bits += layer_bits(out_features, in_features, count, weight_bits)
                        total_weights += out_features * in_features
                        layers[name] = {
                            "in_features": in_features,
                            "weight_bits": weight_bits,
                            "activation_bits": act_bits,
                            "outliers": result.outliers,
                            "relative_output_error": round(error, 6),
                        }
                log.info("quik: block %s quantized", prefix)
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in plan.layers if name not in layers]
    if missing:
        raise QuantizationError(f"quik saw no calibration input reach {', '.join(missing[:3])}")
    quantize_s = time.perf_counter() - started
    bits_per_weight = total_bits / total_weights
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu")
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    meta = {
        "format": QUIK_FORMAT,
        "version": QUIK_FORMAT_VERSION,
        "activation_symmetric": params.activation_symmetric,
        "bits_per_weight": round(bits_per_weight, 4),
        "params": params.model_dump(mode="json"),
        "layers": layers,
    }
    (out_dir / QUIK_FILE).write_text(json.dumps(meta, indent=1) + "\n")

    def counts(sensitive: bool) -> str:
        found = sorted({len(v["outliers"]) for n, v in layers.items() if _is_sensitive(n, params) == sensitive})
        return ",".join(map(str, found)) or "-"

    report = plan.describe()
    report.update(
        {
            "storage": "simulated",
            "backend": "qtrust quik",
            "quantize_s": f"{quantize_s:.3f}",
            "calibration_samples": str(len(input_ids)),
            "bits_per_layer": ",".join(
                f"{b}:{n}" for b, n in sorted(Counter(v["weight_bits"] for v in layers.values()).items())
            ),
            "bits_per_weight": f"{bits_per_weight:.3f}",
            "outlier_features": counts(False),
            "sensitive_outlier_features": counts(True),
            "activation_bits": str(params.activation_bits),
            "sensitive_bits": str(params.sensitive_bits),
            "mean_relative_output_error": f"{sum(errors) / len(errors):.6g}",
        }
    )
    log.info(
        "quik %s: %d layers, %.3f bits per weight, mean relative output error %s, in %.1f s",
        recipe.label,
        len(layers),
        bits_per_weight,
        report["mean_relative_output_error"],
        quantize_s,
    )
    return report


# -------------------------------------------------------------------------------- load


def read_quik_file(folder: Path) -> dict[str, Any]:
    """The checked ``qtrust_quik.json`` of a QUIK checkpoint folder.

    Raises:
        ValueError: the file is missing or damaged (one line saying what is wrong).
    """
    path = Path(folder) / QUIK_FILE
    fix = "rebuild the variant (delete its cache entry)"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: the folder is not a qtrust QUIK checkpoint; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is damaged ({type(err).__name__}: {err}); {fix}") from None
    problem = _quik_file_problem(meta)
    if problem:
        raise ValueError(f"{path} is damaged ({problem}); {fix}")
    return meta


def _quik_file_problem(meta: Any) -> str | None:
    if not isinstance(meta, dict) or meta.get("format") != QUIK_FORMAT:
        return f"no format {QUIK_FORMAT!r}"
    if meta.get("version") != QUIK_FORMAT_VERSION:
        return f"version {meta.get('version')!r}, this qtrust reads version {QUIK_FORMAT_VERSION}"
    layers = meta.get("layers")
    if not isinstance(layers, dict) or not layers:
        return "no layers"
    if not isinstance(meta.get("activation_symmetric"), bool):
        return "activation_symmetric is not true or false"
    for name, layer in layers.items():
        if not isinstance(layer, dict):
            return f"layer {name!r} is not a mapping"
        for key in ("in_features", "weight_bits", "activation_bits"):
            if not isinstance(layer.get(key), int) or isinstance(layer.get(key), bool):
                return f"layer {name!r} has no integer {key}"
        if not 2 <= layer["activation_bits"] <= 16:
            return f"layer {name!r} has activation_bits {layer['activation_bits']}"
        outliers = layer.get("outliers")
        if not isinstance(outliers, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < layer["in_features"] for i in outliers
        ):
            return f"layer {name!r} has no valid outlier feature list"
    return None


def load_quik(request: LoadRequest, hf: TransformersLoader) -> tuple[Any, dict[str, Any]]:
    """The QUIK checkpoint as an engine whose recorded layers quantize their inputs per token.

    Raises:
        ValueError: ``qtrust_quik.json`` is missing or damaged, or names layers the model lacks.
    """
    from cluster.quantization.quik_linear import install_activation_quantization

    meta = read_quik_file(request.path)
    engine = hf.from_pretrained(request.path)
    layers = {name: (layer["outliers"], layer["activation_bits"]) for name, layer in meta["layers"].items()}
    try:
        install_activation_quantization(engine.model, layers, symmetric=meta["activation_symmetric"])
    except ValueError as err:
        raise ValueError(f"{Path(request.path) / QUIK_FILE} does not fit the checkpoint: {err}") from None
    bits = sorted({layer["activation_bits"] for layer in meta["layers"].values()})
    return engine, {
        "size_bytes": folder_size_bytes(request.path),
        "bits_per_weight": str(meta.get("bits_per_weight", "")),
        "activation_bits": ",".join(map(str, bits)),
        "quik_layers": len(layers),
    }
