"""The quantization methods qtrust knows: one table, ``name -> QuantMethod``.

Everything that differs between methods lives in a method's :class:`QuantMethod` entry (data,
small pure-Python checks) and in the functions it names as ``"module:function"`` strings (heavy
work, imported only when called): how the variant's checkpoint is built, how Transformers loads
it, how vLLM loads it or why it cannot, which packages it needs, the bit widths and group sizes
it accepts, whether it runs a calibration set, where its result lives (simulated or packed
checkpoint, load time, prequantized folder), which recipe fields it takes and its own recipe
checks. The rest of qtrust asks the table (``recipe.quant_method``) instead of comparing method
names, and ``qtrust validate`` reads the table without importing torch.

How to add a quantization method
--------------------------------
Write ``cluster/quantization/<name>.py`` with the functions the entry names, and import torch and
the method's library inside those functions so the module itself stays light:

* ``build(model, tokenizer, recipe, plan, calibration_texts, out_dir) -> dict[str, str]`` for a
  method written once into the variant cache (``kind="cached"``): quantize the loaded model and
  save a checkpoint folder (see :func:`cluster.quantization.rtn.quantize_rtn`);
* ``transformers(request, hf) -> (engine, report)``: load the variant through the
  :class:`~cluster.quantization.loading.TransformersLoader` ``hf`` (see
  :mod:`cluster.quantization.loading` for the contract and ``none``'s loaders, and
  :mod:`cluster.quantization.build` for the cached methods');
* ``vllm(request) -> VLLMWeights``: the folder vLLM loads, or leave it None and give
  ``vllm_refusal``;
* optionally ``check(recipe) -> str | None`` for recipe rules the entry's fields do not express.

Then add one line to :data:`METHODS` (bits, fields, packages, ...). The recipe schema (its
``method`` choices and field checks), engine selection, validation, the planner and the variant
loaders pick it up from the table; add the package to the ``quant`` extra when it needs one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from cluster.quantization.recipes import QuantRecipe

MIN_BITS = 2
MAX_BITS = 8
#: Every bit width qtrust quantizes to.
ALL_BITS = frozenset(range(MIN_BITS, MAX_BITS + 1))
#: Bit widths that compressed-tensors checkpoints can hold *and* engines serve packed (vLLM's
#: WNA16 kernels and transformers' compressed-tensors loader). Other widths are stored simulated.
PACKABLE_BITS = frozenset({4, 8})
#: Bit widths hqq 0.2.8 quantizes to (within qtrust's 2..8 range).
HQQ_BITS = frozenset({2, 3, 4, 5, 6, 8})
#: bitsandbytes types and their bits.
BNB_BITS: dict[str, int] = {"int8": 8, "nf4": 4, "fp4": 4}
#: Prequantized checkpoint formats (``quant_method``) vLLM loads itself.
VLLM_CHECKPOINT_FORMATS = frozenset({"compressed-tensors", "awq", "gptq"})

#: Where a method's result lives: nothing to do, a checkpoint built once into the variant cache,
#: weights quantized while the model loads, or a checkpoint that is already quantized.
Kind = Literal["none", "cached", "load-time", "prequantized"]
#: Optional recipe fields; a method takes only those in its ``fields``.
OPTIONAL_FIELDS = ("storage", "bnb_type", "calibration", "overrides", "source", "revision")


def resolve(target: str) -> Any:
    """The object a ``"package.module:attribute[.attribute]"`` string names (imported now)."""
    module_name, _, attribute = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class QuantMethod:
    """One quantization method: what it accepts, and where its behaviour lives.

    ``"module:function"`` fields are imported only when used (see the module docstring for their
    signatures); plain callables must be light (they run while a sweep is validated).
    """

    name: str
    summary: str
    """A few words for messages (``bits must be null for method 'none' (no quantization)``)."""
    kind: Kind
    transformers: str
    """``"module:function"``: how the Hugging Face engine loads the variant."""
    build: str | None = None
    """``"module:function"`` quantizing a loaded model into a checkpoint folder (``kind="cached"``)."""
    vllm: str | None = None
    """``"module:function"``: the folder vLLM loads; None when vLLM cannot serve the method."""
    vllm_refusal: str | None = None
    """Why vLLM cannot serve the method (completes ``method <name> ...``)."""
    vllm_formats: frozenset[str] | None = None
    """Prequantized: the checkpoint ``quant_method`` formats vLLM serves (None: any the method gives)."""
    bits: frozenset[int] = frozenset()
    """Bit widths the method quantizes to (empty: it takes no ``bits``)."""
    bits_required: bool = False
    bits_error: str = "{name} quantizes to {supported} bits, not {bits}"
    """Message for a width outside ``bits`` (``{name}``, ``{bits}``, ``{supported}``)."""
    fields: frozenset[str] = frozenset()
    """Optional recipe fields the method takes (see :data:`OPTIONAL_FIELDS`)."""
    layerwise: bool = False
    """Quantizes the linear layers of qtrust's target plan: ``group_size``, ``symmetric`` and
    ``overrides`` apply, and the group sizes must divide the model's layer widths."""
    group_size_required: bool = False
    calibrated: bool = False
    """Runs a calibration set through the model (the recipe gets a default ``calibration``)."""
    auto_storage: Literal["simulated", "packed", "codes"] | None = None
    """Cached methods: what ``storage: auto`` means (``packed``: where every width is packable;
    ``codes``: the method's own packed format at every width, reported as ``packed``)."""
    packed_bits_error: str | None = None
    """Message when ``storage: packed`` asks for a width outside :data:`PACKABLE_BITS`."""
    packages: tuple[str, ...] = ()
    """Import names the method needs here (checked at validation)."""
    packed_packages: tuple[str, ...] = ()
    """Import names needed in addition when the result is stored packed."""
    missing_hint: str = "use method rtn, or install it"
    backend_check: str | None = None
    """``"module:function"`` returning a message when the installed package cannot run here."""
    fill_defaults: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Completes a raw recipe dictionary before validation (e.g. bnb: bits from ``bnb_type``)."""
    check: Callable[[QuantRecipe], str | None] | None = None
    """Recipe rules the fields above do not express (a message, or None)."""
    label: Callable[[QuantRecipe], str] | None = None
    """The recipe's short label, for methods that are not layerwise (default ``<name>[-w<bits>]``)."""
    params: str | None = None
    """``"module:Model"``: the pydantic model of the recipe's ``params`` block (the method's own
    settings, keyed with the recipe). Its module must import without torch: validation loads it."""
    shape_check: str | None = None
    """``"module:function"``: ``(recipe, shape) -> list[str]``, problems of the recipe on a model of
    that :class:`~cluster.quantization.checks.ModelShape` (its module must import without torch)."""

    # ------------------------------------------------------------------ what it is

    @property
    def quantizes(self) -> bool:
        """Whether the variant's weights differ from the model's own checkpoint."""
        return self.kind != "none"

    @property
    def is_cached(self) -> bool:
        """Whether the result is built once into the variant cache."""
        return self.build is not None

    @property
    def prequantized(self) -> bool:
        """Whether the variant is a checkpoint that is already quantized (bits come from its config)."""
        return self.kind == "prequantized"

    @property
    def quantizes_here(self) -> bool:
        """Whether qtrust quantizes the weights itself (``keep_full_precision`` applies)."""
        return self.kind in ("cached", "load-time")

    def resolved_storage(self, recipe: QuantRecipe) -> str:
        """``packed``, ``simulated``, ``load-time``, ``prequantized`` or ``none`` for ``recipe``."""
        if self.kind != "cached":
            return self.kind
        if recipe.storage != "auto":
            return recipe.storage
        if self.auto_storage == "simulated":
            return "simulated"
        if self.auto_storage == "codes":
            return "packed"
        packable = recipe.bits in PACKABLE_BITS and all(o.bits in PACKABLE_BITS for o in recipe.overrides)
        return "packed" if packable else "simulated"

    def recipe_label(self, recipe: QuantRecipe) -> str:
        """Short human label such as ``none``, ``rtn-w4-g64-asym`` or ``bnb-nf4``."""
        if self.layerwise:
            group = f"g{recipe.group_size}" if recipe.group_size is not None else "gch"
            sym = "sym" if recipe.symmetric else "asym"
            mixed = "-mixed" if recipe.overrides else ""
            return f"{self.name}-w{recipe.bits}-{group}-{sym}{mixed}"
        if self.label is not None:
            return self.label(recipe)
        return self.name + (f"-w{recipe.bits}" if recipe.bits else "")

    # ------------------------------------------------------------------ checks

    def recipe_problem(self, recipe: QuantRecipe) -> str | None:
        """The first reason ``recipe`` is inconsistent for this method (None when it is fine)."""
        where = f"method {self.name!r}"
        bits = recipe.bits
        if self.bits_required and bits is None:
            return f"bits is required for {where} (an integer from {MIN_BITS} to {MAX_BITS})"
        if not self.bits and bits is not None:
            return f"bits must be null for {where} ({self.summary}); set method to 'rtn' to quantize"
        if recipe.storage != "auto" and "storage" not in self.fields:
            return f"storage applies to {takers('storage')} only; remove it for {where}"
        if recipe.storage == "packed" and self.packed_bits_error and bits not in PACKABLE_BITS:
            return self.packed_bits_error.format(name=self.name, bits=bits)
        if recipe.bnb_type is not None and "bnb_type" not in self.fields:
            return f"bnb_type applies to {takers('bnb_type')} only; remove it for {where}"
        if bits is not None and bits not in self.bits:
            return self.bits_error.format(name=self.name, bits=bits, supported=sorted(self.bits))
        if recipe.params and self.params is None:
            return f"params apply to {takers('params')} only; remove them for {where}"
        problem = self.check(recipe) if self.check is not None else None
        if problem:
            return problem
        if recipe.calibration is not None and "calibration" not in self.fields:
            return f"calibration applies to {takers('calibration')} only; remove it for {where}"
        if recipe.overrides and "overrides" not in self.fields:
            return f"overrides (mixed precision) apply to {takers('overrides')}; remove them for {where}"
        if (recipe.source is not None or recipe.revision is not None) and "source" not in self.fields:
            return f"source and revision apply to {takers('source')} only; remove them for {where}"
        return None

    def packages_for(self, recipe: QuantRecipe) -> tuple[str, ...]:
        """The import names ``recipe`` needs on this machine."""
        extra = self.packed_packages if self.resolved_storage(recipe) == "packed" else ()
        return self.packages + extra

    def vllm_problem(self, checkpoint_method: str | None = None) -> str | None:
        """Why vLLM cannot serve this method (or this prequantized checkpoint format), else None."""
        if self.vllm_refusal:
            return f"method {self.name} {self.vllm_refusal}"
        if self.vllm_formats is not None and checkpoint_method and checkpoint_method not in self.vllm_formats:
            return (
                f"the checkpoint is {checkpoint_method}; qtrust serves {', '.join(sorted(self.vllm_formats))} "
                "checkpoints with vLLM"
            )
        return None


def takers(field: str) -> str:
    """The methods that take recipe ``field``, for messages: ``method 'bnb'`` or ``rtn, gptq and awq``."""
    names = [m.name for m in METHODS.values() if (m.params is not None if field == "params" else field in m.fields)]
    if len(names) == 1:
        return f"method {names[0]!r}"
    return ", ".join(names[:-1]) + " and " + names[-1]


def get_method(name: str) -> QuantMethod:
    """The table entry of method ``name``.

    Raises:
        ValueError: an unknown method (the message lists the known ones).
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown quantization method {name!r}; available: {', '.join(METHODS)}") from None


# ------------------------------------------------------------------ per-method rules (pure Python)


def _lazy(target: str, recipe: QuantRecipe) -> str | None:
    """Call a light ``"module:function"`` check (imported now; its module must not import torch)."""
    return resolve(target)(recipe)


def _bnb_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """bnb: derive ``bnb_type`` from ``bits`` (8 -> int8, 4 -> nf4) and the reverse."""
    kind, bits = data.get("bnb_type"), data.get("bits")
    if kind is None and bits in (4, 8):
        data["bnb_type"] = "int8" if bits == 8 else "nf4"
    elif bits is None and kind in BNB_BITS:
        data["bits"] = BNB_BITS[kind]
    return data


def _bnb_check(recipe: QuantRecipe) -> str | None:
    expected = BNB_BITS.get(recipe.bnb_type or "")
    if expected != recipe.bits:
        return f"bnb_type {recipe.bnb_type} is {expected}-bit but bits is {recipe.bits}; drop one of them"
    return None


def _packed_overrides_check(recipe: QuantRecipe) -> str | None:
    """gptq/awq: every override of a packed recipe needs a packable width."""
    if recipe.storage == "packed":
        for i, override in enumerate(recipe.overrides):
            if override.bits not in PACKABLE_BITS:
                return f"overrides[{i}]: {override.bits} bits cannot be stored packed (4 or 8 only); use storage: simulated"
    return None


_LLMC_PACKED_BITS = (
    "{name} at {bits} bits cannot be stored packed: compressed-tensors kernels (vLLM, transformers) serve packed "
    "weights at 4 and 8 bits only; use storage: simulated (dequantized dense weights, same algorithm) or bits: 4"
)
_LOADING = "cluster.quantization.loading"
_BUILD = "cluster.quantization.build"


def _llmc_method(name: str, summary: str) -> QuantMethod:
    """gptq and awq: llm-compressor with a calibration set."""
    return QuantMethod(
        name,
        summary,
        "cached",
        transformers=f"{_BUILD}:load_built",
        build="cluster.quantization.llmc:quantize_with_llmcompressor",
        vllm=f"{_BUILD}:built_vllm_weights",
        bits=ALL_BITS,
        bits_required=True,
        fields=frozenset({"storage", "calibration", "overrides"}),
        layerwise=True,
        calibrated=True,
        auto_storage="packed",
        packed_bits_error=_LLMC_PACKED_BITS,
        packages=("llmcompressor",),
        check=_packed_overrides_check,
    )


#: Every quantization method, in the order the recipe schema lists them.
METHODS: dict[str, QuantMethod] = {
    m.name: m
    for m in (
        QuantMethod(
            "none",
            "no quantization",
            "none",
            transformers=f"{_LOADING}:load_plain",
            vllm=f"{_LOADING}:plain_vllm_weights",
        ),
        QuantMethod(
            "rtn",
            "round-to-nearest",
            "cached",
            transformers=f"{_BUILD}:load_built",
            build="cluster.quantization.rtn:quantize_rtn",
            vllm=f"{_BUILD}:built_vllm_weights",
            bits=ALL_BITS,
            bits_required=True,
            fields=frozenset({"storage", "overrides"}),
            layerwise=True,
            auto_storage="simulated",
            packed_bits_error=(
                "rtn at {bits} bits cannot be stored packed (packed weights are served at 4 and 8 bits only); "
                "use storage: simulated or auto"
            ),
            packed_packages=("llmcompressor",),
            missing_hint="use storage: simulated, or install it",
        ),
        _llmc_method("gptq", "GPTQ through llm-compressor"),
        _llmc_method("awq", "AWQ through llm-compressor"),
        QuantMethod(
            "bnb",
            "bitsandbytes at load time",
            "load-time",
            transformers="cluster.quantization.loadtime:load_bnb_variant",
            vllm_refusal="quantizes while transformers loads the model, which vLLM does not do",
            bits=frozenset(BNB_BITS.values()),
            bits_required=True,
            bits_error=(
                "bnb quantizes to 8 bits (bnb_type int8) or 4 bits (nf4, fp4), not {bits}; "
                "use hqq or gptq for other widths"
            ),
            fields=frozenset({"bnb_type"}),
            packages=("bitsandbytes",),
            backend_check="cluster.quantization.loadtime:check_bnb_available",
            fill_defaults=_bnb_defaults,
            check=_bnb_check,
            label=lambda recipe: f"bnb-{recipe.bnb_type}",
        ),
        QuantMethod(
            "hqq",
            "half-quadratic quantization at load time",
            "load-time",
            transformers="cluster.quantization.loadtime:load_hqq_variant",
            vllm_refusal="quantizes while transformers loads the model, which vLLM does not do",
            bits=HQQ_BITS,
            bits_required=True,
            bits_error="hqq quantizes to {supported} bits, not {bits}; use bits 3 or 4 instead",
            fields=frozenset({"overrides"}),
            layerwise=True,
            group_size_required=True,
            packages=("hqq",),
        ),
        QuantMethod(
            "aqlm",
            "additive quantization with learned codebooks (AQLM), written in the aqlm package's format",
            "cached",
            transformers="cluster.quantization.aqlm:load_aqlm",
            build="cluster.quantization.aqlm:quantize_aqlm",
            vllm_refusal="is not served by the installed vLLM (it dropped AQLM); use engine: hf",
            bits=frozenset({2, 3, 4}),
            bits_required=True,
            bits_error="aqlm quantizes to 2, 3 or 4 bits per weight, not {bits}",
            fields=frozenset({"calibration"}),
            calibrated=True,
            auto_storage="codes",
            packages=("aqlm",),
            missing_hint="pip install 'aqlm[cpu]' (or aqlm[gpu] on CUDA)",
            params="cluster.quantization.aqlm:AqlmParams",
            check=lambda recipe: _lazy("cluster.quantization.aqlm:check_recipe", recipe),
            shape_check="cluster.quantization.aqlm:shape_problems",
            label=lambda recipe: resolve("cluster.quantization.aqlm:recipe_label")(recipe),
        ),
        QuantMethod(
            "quip_sharp",
            "QuIP# (randomized Hadamard incoherence, BlockLDLQ, E8P lattice codebooks), stored dequantized",
            "cached",
            transformers=f"{_BUILD}:load_built",
            build="cluster.quantization.quip_sharp:quantize_quip_sharp",
            vllm=f"{_BUILD}:built_vllm_weights",
            bits=frozenset({2, 3, 4}),
            bits_required=True,
            bits_error="quip_sharp quantizes to 2 bits (E8P) or 3 and 4 bits (residual E8P), not {bits}",
            fields=frozenset({"calibration"}),
            calibrated=True,
            auto_storage="simulated",
            params="cluster.quantization.quip_sharp:QuipSharpParams",
            shape_check="cluster.quantization.quip_sharp:shape_problems",
        ),
        QuantMethod(
            "quik",
            "QUIK (4-bit weights and activations, outlier input features kept in 16 bits)",
            "cached",
            transformers="cluster.quantization.quik:load_quik",
            build="cluster.quantization.quik:quantize_quik",
            vllm_refusal="quantizes activations while the Hugging Face engine runs, which vLLM does not do",
            bits=frozenset({4, 8}),
            bits_required=True,
            bits_error="quik quantizes weights to 4 bits (8 for its sensitive layers), not {bits}",
            fields=frozenset({"calibration"}),
            calibrated=True,
            auto_storage="simulated",
            params="cluster.quantization.quik:QuikParams",
            shape_check="cluster.quantization.quik:shape_problems",
        ),
        QuantMethod(
            "prequantized",
            "an already quantized checkpoint",
            "prequantized",
            transformers="cluster.quantization.prequantized:load_prequantized_variant",
            vllm="cluster.quantization.prequantized:prequantized_vllm_weights",
            vllm_formats=VLLM_CHECKPOINT_FORMATS,
            bits=ALL_BITS,
            fields=frozenset({"source", "revision"}),
        ),
    )
}


def method_defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    """A raw recipe dictionary with its method's defaults filled in (unknown methods: unchanged).

    A method with a ``params`` model gets its block validated and completed here, so that every
    setting (defaults included) is part of the recipe's key.

    Raises:
        ValueError: the ``params`` block does not fit the method's model (the message names the field).
    """
    out = dict(data)
    name = out.get("method", "none")
    method = METHODS.get(name) if isinstance(name, str) else None
    if method is None:
        return out
    if method.fill_defaults is not None:
        out = method.fill_defaults(out)
    if method.calibrated and out.get("calibration") is None:
        out["calibration"] = {}
    if method.params is not None:
        out["params"] = validated_params(method, out.get("params"))
    return out


def validated_params(method: QuantMethod, raw: Any) -> dict[str, Any]:
    """``raw`` checked against the method's ``params`` model, with its defaults filled in."""
    from pydantic import BaseModel, ValidationError

    model: type[BaseModel] = resolve(method.params or "")
    if raw is not None and not isinstance(raw, Mapping):
        raise ValueError(f"params of method {method.name!r} must be a mapping of settings, not {type(raw).__name__}")
    try:
        return model.model_validate(dict(raw or {})).model_dump(mode="json")
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "params"
        known = ", ".join(model.model_fields)
        raise ValueError(f"params.{where}: {first['msg']} (method {method.name} takes: {known})") from None
