"""How a model variant is quantized: a small validated recipe.

A recipe is data: it travels in job configs, in cache keys and in result records. Applying it is
the job of :mod:`cluster.variants.load` and the method modules of this package. Every check that needs no
model (bit widths a method supports, packed storage, field combinations) happens here, so a sweep
fails at validation instead of after other variants have run; checks that need the model's shape
live in :mod:`cluster.quantization.checks`.

Methods:

* ``none``: the model as loaded.
* ``rtn``: round-to-nearest weights (qtrust's own, dense "simulated" storage; ``storage: packed``
  runs llm-compressor's round-to-nearest and writes a compressed-tensors checkpoint).
* ``gptq`` / ``awq``: llm-compressor with a calibration set; packed compressed-tensors at 4 and 8
  bits, dequantized dense weights ("simulated") at other widths.
* ``bnb``: bitsandbytes at load time (``int8``, ``nf4``, ``fp4``).
* ``hqq``: half-quadratic quantization at load time (hqq's own API).
* ``prequantized``: a checkpoint that is already quantized, loaded as it is.

What each method accepts and how it runs is its entry in :mod:`cluster.quantization.methods`; the
checks below ask that table (``QuantRecipe.quant_method``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.quantization.methods import (  # noqa: F401 - re-exported for older imports
    BNB_BITS,
    HQQ_BITS,
    MAX_BITS,
    METHODS,
    MIN_BITS,
    PACKABLE_BITS,
    QuantMethod,
    method_defaults,
)

#: The method names, from :data:`cluster.quantization.methods.METHODS` (in its order).
Method = Literal[tuple(METHODS)]  # type: ignore[valid-type]
Storage = Literal["auto", "packed", "simulated"]
BnbType = Literal["int8", "nf4", "fp4"]

#: What ``precision_bits`` reports for an unquantized model (ordering only: fp32 > any int).
FULL_PRECISION_BITS = 32.0

#: Methods whose result is written once into the variant cache (a checkpoint folder).
CACHED_METHODS = frozenset(m.name for m in METHODS.values() if m.is_cached)
#: Methods that quantize while the model loads (nothing is cached).
LOAD_TIME_METHODS = frozenset(m.name for m in METHODS.values() if m.kind == "load-time")
#: Methods that need ``bits``.
BIT_METHODS = frozenset(m.name for m in METHODS.values() if m.bits_required)
#: Methods that run a calibration set through the model.
CALIBRATED_METHODS = frozenset(m.name for m in METHODS.values() if m.calibrated)


class CalibrationSpec(BaseModel):
    """The text run through the model while GPTQ/AWQ fit their scales.

    ``source``: ``builtin`` (qtrust's own English paragraphs, shipped with the package),
    ``benchmark:<name>`` (the rendered prompts of a built-in benchmark, read from the data
    folder), or the path of a UTF-8 text file (one sample per paragraph, paragraphs separated by
    blank lines; relative paths are relative to the sweep file). ``samples`` are drawn with
    ``seed`` and cut to ``seq_len`` tokens.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = "builtin"
    samples: int = Field(64, ge=1, le=4096)
    seq_len: int = Field(512, ge=16, le=16384)
    seed: int = Field(0, ge=0)

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("calibration.source is empty; use 'builtin', 'benchmark:<name>' or a text file path")
        if value.startswith("benchmark:") and not value.removeprefix("benchmark:").strip():
            raise ValueError(
                "calibration.source 'benchmark:' names no benchmark; write e.g. 'benchmark:truthfulqa_mc1'"
            )
        return value


class LayerOverride(BaseModel):
    """Other bits for some layers of the model (mixed precision).

    Select layers by decoder ``blocks`` (indices; negative ones count from the end, so
    ``[0, -1]`` is the first and last block) and/or ``modules`` (patterns: a module name, a name
    suffix such as ``down_proj``, or ``re:<regex>`` matched against full module names).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    blocks: list[int] = Field(default_factory=list)
    modules: list[str] = Field(default_factory=list)
    bits: int
    group_size: int | None = Field(None, description="default: the recipe's group size")

    _check_bits = field_validator("bits")(lambda cls, value: check_bits(value))
    _check_patterns = field_validator("modules")(lambda cls, value: check_patterns(value))

    @model_validator(mode="after")
    def _selects_something(self) -> LayerOverride:
        if not self.blocks and not self.modules:
            raise ValueError("an override needs 'blocks' (e.g. [0, -1]) or 'modules' (e.g. ['down_proj'])")
        return self


def check_bits(value: int | None) -> int | None:
    """Raise ``ValueError`` for a bit width outside ``MIN_BITS..MAX_BITS`` (None passes)."""
    if value is not None and not (MIN_BITS <= value <= MAX_BITS):
        raise ValueError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS} (got {value})")
    return value


def check_patterns(patterns: list[str]) -> list[str]:
    """Validate every module pattern of a list (see :func:`check_pattern`)."""
    for pattern in patterns:
        check_pattern(pattern)
    return patterns


def check_pattern(pattern: str) -> str:
    """Raise ``ValueError`` when a ``re:`` module pattern is not a valid regular expression."""
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as err:
            raise ValueError(f"module pattern {pattern!r} is not a valid regular expression ({err})") from None
    elif not pattern:
        raise ValueError("module patterns must not be empty")
    return pattern


class QuantRecipe(BaseModel):
    """A weight-quantization recipe (see the module docstring for the methods)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = "none"
    bits: int | None = None
    group_size: int | None = Field(64, description="input features per scale; null = one scale per output row")
    symmetric: bool = False
    storage: Storage = Field(
        "auto",
        description="rtn/gptq/awq: 'packed' (compressed-tensors, 4 or 8 bits), 'simulated' (dequantized "
        "dense weights) or 'auto' (packed where possible; rtn: simulated)",
    )
    bnb_type: BnbType | None = Field(
        None, description="bnb only: int8 (8 bits), nf4 or fp4 (4 bits); default nf4 at 4 bits"
    )
    calibration: CalibrationSpec | None = Field(None, description="gptq/awq only (default: builtin text)")
    keep_full_precision: list[str] = Field(
        default_factory=lambda: ["lm_head"], description="module patterns left unquantized"
    )
    overrides: list[LayerOverride] = Field(
        default_factory=list, description="mixed precision: other bits for some layers"
    )
    source: str | None = Field(
        None, description="prequantized only: the quantized checkpoint (default: the model's own source)"
    )
    revision: str | None = Field(None, description="prequantized only: hub revision of `source`")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="aqlm, quip_sharp, quik: the method's own settings (codebooks, outliers, seeds, ...); "
        "see docs/quantization.md",
    )

    _check_bits = field_validator("bits")(lambda cls, value: check_bits(value))

    @field_validator("group_size")
    @classmethod
    def _check_group_size(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError(
                f"group_size must be a positive integer, or null for one scale per output channel (got {value})"
            )
        return value

    _check_keep = field_validator("keep_full_precision")(lambda cls, value: check_patterns(value))

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: object) -> object:
        """The method's defaults (bnb: bits from ``bnb_type`` and the reverse; gptq/awq: calibration)."""
        if not isinstance(data, dict):
            return data
        return method_defaults(data)

    @model_validator(mode="after")
    def _check_consistency(self) -> QuantRecipe:
        problem = self.quant_method.recipe_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def quant_method(self) -> QuantMethod:
        """This recipe's entry in the method table (what the method accepts and how it runs)."""
        return METHODS[self.method]

    @property
    def checkpoint_source(self) -> str | None:
        """The quantized checkpoint loaded instead of the model's own source (prequantized ``source``)."""
        return self.source if self.quant_method.prequantized else None

    @property
    def is_cached(self) -> bool:
        """Whether the variant is built once into the variant cache (rtn, gptq, awq)."""
        return self.quant_method.is_cached

    @property
    def resolved_storage(self) -> str:
        """``packed``, ``simulated``, ``load-time``, ``prequantized`` or ``none``."""
        return self.quant_method.resolved_storage(self)

    @property
    def precision_bits(self) -> float:
        """Bits per weight, used to order variants from most to least precise (none = 32).

        For ``prequantized`` without ``bits`` this is unknown here; the planner reads the
        checkpoint's config (see :func:`cluster.quantization.prequantized.inspect_checkpoint`).
        """
        if not self.quant_method.quantizes or self.bits is None:
            return FULL_PRECISION_BITS
        return float(self.bits)

    @property
    def label(self) -> str:
        """Short human label such as ``none``, ``rtn-w4-g64-asym`` or ``bnb-nf4``."""
        return self.quant_method.recipe_label(self)

    def describe(self) -> dict[str, str]:
        """Flat string description for run records."""
        method = self.quant_method
        out = {"method": self.method, "label": self.label, "storage": self.resolved_storage}
        if method.layerwise:
            out.update(
                {
                    "bits": str(self.bits),
                    "group_size": "per-channel" if self.group_size is None else str(self.group_size),
                    "symmetric": str(self.symmetric).lower(),
                }
            )
        if self.bnb_type:
            out.update({"bits": str(self.bits), "bnb_type": self.bnb_type})
        if method.quantizes_here:
            out["keep_full_precision"] = ",".join(self.keep_full_precision) or "-"
        if self.overrides:
            out["overrides"] = "; ".join(
                f"blocks={o.blocks} modules={o.modules} bits={o.bits}" + (f" g={o.group_size}" if o.group_size else "")
                for o in self.overrides
            )
        if self.calibration is not None:
            cal = self.calibration
            out.update(
                {
                    "calibration.source": cal.source,
                    "calibration.samples": str(cal.samples),
                    "calibration.seq_len": str(cal.seq_len),
                    "calibration.seed": str(cal.seed),
                }
            )
        if self.source:
            out["source"] = self.source
        return out

    def key_fields(self) -> dict[str, object]:
        """The fields that change what the variant computes (for cache and shard keys)."""
        return without_empty_params(self.model_dump(mode="json", exclude={"name"}))

    def method_params(self) -> Any:
        """The method's ``params`` as its pydantic model (None for methods without one)."""
        method = self.quant_method
        if method.params is None:
            return None
        from cluster.quantization.methods import resolve

        return resolve(method.params).model_validate(self.params)


def without_empty_params(fields: dict[str, object]) -> dict[str, object]:
    """Recipe key fields without an empty ``params`` (keys of methods without params stay as they were)."""
    if not fields.get("params"):
        fields.pop("params", None)
    return fields
