"""GPTQ, AWQ and packed round-to-nearest through llm-compressor.

:func:`quantize_with_llmcompressor` quantizes an already-loaded Hugging Face causal LM in place
and writes a checkpoint folder:

* ``packed``: a compressed-tensors ``pack-quantized`` checkpoint (int weights, scales and zero
  points), served by vLLM and loaded by transformers (``CompressedTensorsConfig``).
* ``simulated``: a plain dense checkpoint whose quantized layers hold the dequantized weights
  (``scale * (q - zero)``), with no ``quantization_config``; any engine loads it as a normal model.

The layers and their bits come from a :class:`~cluster.quantization.targets.TargetPlan`, never
from the recipe's raw patterns, so ``keep_full_precision`` and ``overrides`` mean what they mean
for every other method. Each plan entry becomes an exact-name target of a compressed-tensors
config group (one group per distinct bits/group size).

AWQ's smoothing (llm-compressor's default mappings for the architecture) is limited to mappings
whose balance layers are all quantized and whose smoothing layer is not a full-precision linear,
so full-precision layers stay bit-identical (llm-compressor itself would rescale them, and fails
outright when a mapping's balance layers are all unquantized).

llm-compressor is imported lazily: importing this module needs only torch and transformers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.targets import LayerQuant, TargetPlan, scalar_bits_per_weight

if TYPE_CHECKING:
    from compressed_tensors.quantization import QuantizationScheme
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: loguru names silenced while llm-compressor runs (unless ``LLM_COMPRESSOR_LOG_LEVEL`` is set).
_LOGURU_NAMES = ("llmcompressor", "compressed_tensors")


def quantize_with_llmcompressor(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    recipe: QuantRecipe,
    plan: TargetPlan,
    calibration_texts: list[str] | None,
    out_dir: Path,
) -> dict[str, str]:
    """Quantize ``model`` in place with llm-compressor and save it with ``tokenizer`` in ``out_dir``.

    ``recipe.method`` is ``gptq``, ``awq`` (both need ``calibration_texts``, already drawn and
    shuffled by the caller; each is cut to ``recipe.calibration.seq_len`` tokens) or ``rtn``
    (llm-compressor's round-to-nearest, no calibration data). ``plan`` says which layers get
    which bits. Storage follows ``recipe.resolved_storage`` (``packed`` or ``simulated``).

    Returns a flat description for the run record: ``storage``, ``layers_quantized``,
    ``layers_full_precision``, ``bits_per_layer``, ``quantize_s``, ``calibration_samples``,
    ``backend`` (and ``awq_mappings`` for AWQ).

    Raises:
        ValueError: an unsupported method or storage, or GPTQ/AWQ without calibration text.
        RuntimeError: llm-compressor did not quantize the layers the plan names.
    """
    with _quiet_llmcompressor():  # its import alone logs a warning on machines without a GPU
        import llmcompressor

    storage = recipe.resolved_storage
    _check_request(recipe, plan, storage)
    dataset = None
    if recipe.quant_method.calibrated:
        dataset = calibration_dataset(tokenizer, calibration_texts, _seq_len(recipe))
    modifiers, extra = _build_modifiers(model, recipe, plan)
    seed = recipe.calibration.seed if recipe.calibration is not None else 0

    started = time.perf_counter()
    with _llmcompressor_environment(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _run_oneshot(model, tokenizer, modifiers, dataset, _seq_len(recipe))
    quantize_s = time.perf_counter() - started
    verify_quantized(model, plan)
    bits_per_weight = scalar_bits_per_weight(model, plan, recipe.symmetric)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if storage == "packed":
        save_packed(model, tokenizer, out_dir)
    else:
        save_simulated(model, tokenizer, plan, out_dir)

    report = {"storage": storage, **plan.describe()}
    report.update(
        {
            "quantize_s": f"{quantize_s:.3f}",
            "calibration_samples": str(len(dataset) if dataset is not None else 0),
            "backend": f"llm-compressor {llmcompressor.__version__}",
            "bits_per_weight": f"{bits_per_weight:.3f}",
            **extra,
        }
    )
    log.info(
        "llm-compressor %s: %s layers quantized (%s) in %.1f s, stored %s",
        recipe.label,
        report["layers_quantized"],
        report["bits_per_layer"],
        quantize_s,
        storage,
    )
    return report


# --- request checks and calibration data ---------------------------------------------------------


def _check_request(recipe: QuantRecipe, plan: TargetPlan, storage: str) -> None:
    """Raise ``ValueError`` for what this backend cannot do."""
    if _MODIFIERS.get(recipe.method) is None:
        raise ValueError(f"llm-compressor runs gptq, awq and packed rtn, not method {recipe.method!r}")
    if storage not in ("packed", "simulated"):
        raise ValueError(f"llm-compressor writes packed or simulated checkpoints, not {storage!r}")
    if not recipe.quant_method.calibrated and storage != "packed":  # rtn
        raise ValueError(
            "rtn with simulated storage is qtrust's own RTN (cluster.quantization.rtn), not llm-compressor"
        )
    if not plan.layers:
        raise ValueError("the target plan quantizes no layer")


def _seq_len(recipe: QuantRecipe) -> int:
    """Calibration sequence length (the recipe's, or the default for rtn, which uses none)."""
    return recipe.calibration.seq_len if recipe.calibration is not None else 512


def calibration_dataset(tokenizer: PreTrainedTokenizerBase, texts: list[str] | None, seq_len: int) -> Dataset:
    """Tokenize ``texts`` (each cut to ``seq_len`` tokens) into a ``datasets.Dataset``.

    Columns ``input_ids`` and ``attention_mask``; texts that tokenize to nothing are dropped.

    Raises:
        ValueError: no text, or no text with a token.
    """
    from datasets import Dataset

    if not texts:
        raise ValueError("GPTQ and AWQ need calibration texts (got none); check the recipe's calibration source")
    encoded = tokenizer(list(texts), truncation=True, max_length=seq_len)
    rows = [
        (ids, mask) for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True) if len(ids) > 0
    ]
    if not rows:
        raise ValueError(f"none of the {len(texts)} calibration texts has a token after tokenization")
    return Dataset.from_dict({"input_ids": [r[0] for r in rows], "attention_mask": [r[1] for r in rows]})


# --- recipe ----------------------------------------------------------------------------------------


def exact_target(name: str) -> str:
    """A compressed-tensors target that matches the module ``name`` and nothing else."""
    return "re:^" + re.escape(name) + "$"


def build_config_groups(plan: TargetPlan, symmetric: bool) -> dict[str, QuantizationScheme]:
    """One weight-only int scheme per distinct (bits, group size) of ``plan``, naming its modules."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    by_quant: dict[LayerQuant, list[str]] = {}
    for name, quant in plan.layers.items():
        by_quant.setdefault(quant, []).append(name)
    ordered = sorted(by_quant.items(), key=lambda item: (item[0].bits, item[0].group_size or 0))
    groups: dict[str, QuantizationScheme] = {}
    for index, (quant, names) in enumerate(ordered):
        if quant.group_size is None:
            args = QuantizationArgs(num_bits=quant.bits, type="int", symmetric=symmetric, strategy="channel")
        else:
            args = QuantizationArgs(
                num_bits=quant.bits, type="int", symmetric=symmetric, strategy="group", group_size=quant.group_size
            )
        groups[f"group_{index}"] = QuantizationScheme(targets=[exact_target(n) for n in names], weights=args)
    return groups


def _build_modifiers(model: nn.Module, recipe: QuantRecipe, plan: TargetPlan) -> tuple[list[Any], dict[str, str]]:
    """The llm-compressor modifiers for ``recipe`` and extra report fields."""
    groups = build_config_groups(plan, recipe.symmetric)
    return _MODIFIERS[recipe.method](model, plan, groups, list(plan.full_precision))


def _gptq_modifiers(model: nn.Module, plan: TargetPlan, groups: Any, ignore: list[str]) -> tuple[list[Any], dict]:
    from llmcompressor.modifiers.quantization import GPTQModifier

    return [GPTQModifier(config_groups=groups, ignore=ignore)], {}


def _rtn_modifiers(model: nn.Module, plan: TargetPlan, groups: Any, ignore: list[str]) -> tuple[list[Any], dict]:
    from llmcompressor.modifiers.quantization import QuantizationModifier

    return [QuantizationModifier(config_groups=groups, ignore=ignore)], {}


def _awq_modifiers(model: nn.Module, plan: TargetPlan, groups: Any, ignore: list[str]) -> tuple[list[Any], dict]:
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    mappings = awq_mappings(model, plan)
    awq = AWQModifier(mappings=mappings)
    return [awq, QuantizationModifier(config_groups=groups, ignore=ignore)], {"awq_mappings": str(len(mappings))}


#: The modifiers of each method this backend runs.
_MODIFIERS = {"gptq": _gptq_modifiers, "awq": _awq_modifiers, "rtn": _rtn_modifiers}
#: Methods this backend runs (``rtn`` only for packed storage).
LLMC_METHODS = frozenset(_MODIFIERS)


def awq_mappings(model: nn.Module, plan: TargetPlan) -> list[Any]:
    """llm-compressor's AWQ mappings for ``model``, resolved to exact module names and filtered.

    A mapping (smoothing layer -> balance layers) is kept only when every balance layer is in
    ``plan.layers``, the smoothing layer is not a full-precision linear (smoothing rescales both,
    and a full-precision layer must stay as it was), and the shapes allow smoothing (a grouped-query
    ``v_proj`` cannot smooth ``o_proj``).
    """
    from compressed_tensors.utils import match_modules_set
    from llmcompressor.modifiers.transform.awq import (
        AWQMapping,
        get_layer_mappings_from_model,
    )

    names = {id(module): name for name, module in model.named_modules()}
    kept = set(plan.full_precision)
    resolved: list[AWQMapping] = []
    skipped = 0
    for mapping in get_layer_mappings_from_model(model):
        for smooth, *balance in match_modules_set(model, (mapping.smooth_layer, *mapping.balance_layers)):
            balance_modules = [m for group in balance for m in group]
            balance_names = [names[id(m)] for m in balance_modules]
            usable = (
                len(smooth) == 1
                and names[id(smooth[0])] not in kept
                and balance_names
                and all(n in plan.layers for n in balance_names)
                and _can_smooth(smooth[0], balance_modules)
            )
            if not usable:
                skipped += 1
                continue
            resolved.append(
                AWQMapping(
                    exact_target(names[id(smooth[0])]),
                    [exact_target(n) for n in balance_names],
                    mapping.activation_hook_target,
                )
            )
    if skipped:
        log.info("AWQ: %d smoothing mappings skipped (full-precision layers or incompatible shapes)", skipped)
    return resolved


def _can_smooth(smooth: nn.Module, balance: list[nn.Module]) -> bool:
    """Whether a linear smoothing layer's outputs line up with the balance layers' inputs."""
    if not isinstance(smooth, nn.Linear):
        return True  # a norm: its weight has one entry per input feature of the balance layers
    width = smooth.out_features
    return all(
        not isinstance(b, nn.Linear) or b.in_features == width or width == 3 * b.in_features  # fused qkv
        for b in balance
    )


# --- running llm-compressor -----------------------------------------------------------------------


def _skip_pinning(self: Any, batch_index: int, input_names: list[str] | None = None) -> None:
    """Stand-in for ``IntermediatesCache.pin_memory`` where no accelerator can pin memory."""


@contextmanager
def _cpu_safe_pinning() -> Iterator[None]:
    """Without CUDA, make llm-compressor's memory pinning a no-op (AWQ pins unconditionally)."""
    if torch.cuda.is_available():
        yield
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.__dict__["pin_memory"]
    IntermediatesCache.pin_memory = _skip_pinning  # type: ignore[method-assign]
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original  # type: ignore[method-assign]


@contextmanager
def _quiet_llmcompressor() -> Iterator[None]:
    """Silence llm-compressor's loguru messages for the call (kept when LLM_COMPRESSOR_LOG_LEVEL is set).

    Errors still propagate as exceptions; only its INFO/METRIC chatter is lost.
    """
    if os.environ.get("LLM_COMPRESSOR_LOG_LEVEL"):
        yield
        return
    from loguru import logger

    for name in _LOGURU_NAMES:
        logger.disable(name)
    try:
        yield
    finally:
        if os.environ.get("LLM_COMPRESSOR_LOG_DISABLED", "").lower() != "true":
            for name in _LOGURU_NAMES:
                logger.enable(name)


@contextmanager
def _tokenizers_parallelism_off() -> Iterator[None]:
    """llm-compressor sets TOKENIZERS_PARALLELISM=false for good; set it only for the call."""
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


@contextmanager
def _llmcompressor_environment() -> Iterator[None]:
    """Every temporary setting llm-compressor needs here, undone afterwards."""
    with _quiet_llmcompressor(), _cpu_safe_pinning(), _tokenizers_parallelism_off():
        yield


def _run_oneshot(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    modifiers: list[Any],
    dataset: Dataset | None,
    seq_len: int,
) -> None:
    """Run ``llmcompressor.oneshot`` on ``model`` in place (no data for round-to-nearest)."""
    from llmcompressor import oneshot

    kwargs: dict[str, Any] = {}
    if dataset is not None:
        kwargs = {
            "dataset": dataset,
            "num_calibration_samples": len(dataset),
            "max_seq_length": seq_len,
            # The caller already drew and shuffled the texts; keep their order (deterministic).
            "shuffle_calibration_samples": False,
        }
    oneshot(model=model, processor=tokenizer, recipe=modifiers, **kwargs)


def verify_quantized(model: nn.Module, plan: TargetPlan) -> None:
    """Check that exactly the plan's layers carry a weight scheme with the plan's bits and group size.

    Raises:
        RuntimeError: a layer is missing, has other bits, or a layer outside the plan was quantized.
    """
    problems: list[str] = []
    for name, module in model.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        weights = getattr(scheme, "weights", None)
        quant = plan.layers.get(name)
        if quant is None:
            if weights is not None:
                problems.append(f"{name} was quantized but the plan leaves it in full precision")
            continue
        if weights is None:
            problems.append(f"{name} was not quantized")
        elif weights.num_bits != quant.bits or weights.group_size != quant.group_size:
            problems.append(
                f"{name} got {weights.num_bits} bits / group {weights.group_size}, "
                f"the plan says {quant.bits} / {quant.group_size}"
            )
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise RuntimeError(f"llm-compressor did not apply the quantization plan: {shown}")


# --- saving ----------------------------------------------------------------------------------------


def save_packed(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Write a compressed-tensors ``pack-quantized`` checkpoint (the in-memory model is compressed too)."""
    with _quiet_llmcompressor(), warnings.catch_warnings():
        # llm-compressor hands the model to transformers as "offloaded" to save it; harmless here.
        warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
        model.save_pretrained(str(out_dir), save_compressed=True)
    tokenizer.save_pretrained(str(out_dir))
    config = json.loads((out_dir / "config.json").read_text())
    written = (config.get("quantization_config") or {}).get("quant_method")
    if written != "compressed-tensors":
        raise RuntimeError(
            f"llm-compressor wrote no compressed-tensors quantization_config to {out_dir} (got {written!r})"
        )


def dequantized_weights(model: nn.Module, plan: TargetPlan) -> dict[str, torch.Tensor]:
    """``{"<layer>.weight": scale * (q - zero)}`` for every layer of ``plan`` (the weight's dtype)."""
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    modules = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name in plan.layers:
            module = modules[name]
            weight = module.weight
            deq = fake_quantize(
                weight,
                module.weight_scale,
                getattr(module, "weight_zero_point", None),
                module.quantization_scheme.weights,
            )
            out[f"{name}.weight"] = deq.to(weight.dtype)
    return out


def dense_copy(model: PreTrainedModel, plan: TargetPlan) -> PreTrainedModel:
    """A fresh model of ``model``'s architecture (on CPU) holding its weights, the plan's dequantized.

    Every parameter and persistent buffer of the fresh model is copied from ``model``'s state dict
    (llm-compressor's extra tensors such as ``weight_scale`` are left behind); tied weights stay tied.

    Raises:
        RuntimeError: the quantized model lacks a tensor the fresh one needs.
    """
    from cluster.quantization.dense import fresh_dense_model

    source = {k: v.detach() for k, v in model.state_dict().items()}
    source.update(dequantized_weights(model, plan))
    return fresh_dense_model(model, source)


def save_simulated(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, plan: TargetPlan, out_dir: Path) -> None:
    """Write a plain dense checkpoint with dequantized weights and no ``quantization_config``."""
    fresh = dense_copy(model, plan)
    fresh.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    config = json.loads((out_dir / "config.json").read_text())
    if "quantization_config" in config:
        raise RuntimeError(f"the simulated checkpoint in {out_dir} unexpectedly has a quantization_config")
