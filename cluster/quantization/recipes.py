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
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Method = Literal["none", "rtn", "gptq", "awq", "bnb", "hqq", "prequantized"]
Storage = Literal["auto", "packed", "simulated"]
BnbType = Literal["int8", "nf4", "fp4"]

MIN_BITS = 2
MAX_BITS = 8
#: What ``precision_bits`` reports for an unquantized model (ordering only: fp32 > any int).
FULL_PRECISION_BITS = 32.0

#: Methods whose result is written once into the variant cache (a checkpoint folder).
CACHED_METHODS = frozenset({"rtn", "gptq", "awq"})
#: Methods that quantize while the model loads (nothing is cached).
LOAD_TIME_METHODS = frozenset({"bnb", "hqq"})
#: Methods that need ``bits``.
BIT_METHODS = frozenset({"rtn", "gptq", "awq", "bnb", "hqq"})
#: Methods that run a calibration set through the model.
CALIBRATED_METHODS = frozenset({"gptq", "awq"})
#: Bit widths that compressed-tensors checkpoints can hold *and* engines serve packed (vLLM's
#: WNA16 kernels and transformers' compressed-tensors loader). Other widths are stored simulated.
PACKABLE_BITS = frozenset({4, 8})
#: Bit widths hqq 0.2.8 quantizes to (within qtrust's 2..8 range).
HQQ_BITS = frozenset({2, 3, 4, 5, 6, 8})
BNB_BITS: dict[str, int] = {"int8": 8, "nf4": 4, "fp4": 4}


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
        """bnb: derive bits from ``bnb_type`` and the reverse; gptq/awq: default calibration."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        method = data.get("method", "none")
        if method == "bnb":
            kind, bits = data.get("bnb_type"), data.get("bits")
            if kind is None and bits in (4, 8):
                data["bnb_type"] = "int8" if bits == 8 else "nf4"
            elif bits is None and kind in BNB_BITS:
                data["bits"] = BNB_BITS[kind]
        if method in CALIBRATED_METHODS and data.get("calibration") is None:
            data["calibration"] = {}
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> QuantRecipe:
        method = self.method
        where = f"method {method!r}"
        if method in BIT_METHODS and self.bits is None:
            raise ValueError(f"bits is required for {where} (an integer from {MIN_BITS} to {MAX_BITS})")
        if method == "none" and self.bits is not None:
            raise ValueError("bits must be null for method 'none' (no quantization); set method to 'rtn' to quantize")
        if self.storage != "auto" and method not in CACHED_METHODS:
            raise ValueError(f"storage applies to rtn, gptq and awq only; remove it for {where}")
        if method in ("gptq", "awq") and self.storage == "packed" and self.bits not in PACKABLE_BITS:
            raise ValueError(
                f"{method} at {self.bits} bits cannot be stored packed: compressed-tensors kernels (vLLM, "
                f"transformers) serve packed weights at 4 and 8 bits only; use storage: simulated (dequantized "
                f"dense weights, same algorithm) or bits: 4"
            )
        if method == "rtn" and self.storage == "packed" and self.bits not in PACKABLE_BITS:
            raise ValueError(
                f"rtn at {self.bits} bits cannot be stored packed (packed weights are served at 4 and 8 bits only); "
                "use storage: simulated or auto"
            )
        if self.bnb_type is not None and method != "bnb":
            raise ValueError(f"bnb_type applies to method 'bnb' only; remove it for {where}")
        if method == "bnb":
            expected = BNB_BITS.get(self.bnb_type or "")
            if self.bits not in (4, 8):
                raise ValueError(
                    f"bnb quantizes to 8 bits (bnb_type int8) or 4 bits (nf4, fp4), not {self.bits}; use hqq or gptq for other widths"
                )
            if expected != self.bits:
                raise ValueError(
                    f"bnb_type {self.bnb_type} is {expected}-bit but bits is {self.bits}; drop one of them"
                )
        if method == "hqq" and self.bits not in HQQ_BITS:
            raise ValueError(f"hqq quantizes to {sorted(HQQ_BITS)} bits, not {self.bits}; use bits 3 or 4 instead")
        if self.calibration is not None and method not in CALIBRATED_METHODS:
            raise ValueError(f"calibration applies to gptq and awq only; remove it for {where}")
        if self.overrides and method not in ("rtn", "gptq", "awq", "hqq"):
            raise ValueError(f"overrides (mixed precision) apply to rtn, gptq, awq and hqq; remove them for {where}")
        if method in ("gptq", "awq") and self.storage == "packed":
            for i, override in enumerate(self.overrides):
                if override.bits not in PACKABLE_BITS:
                    raise ValueError(
                        f"overrides[{i}]: {override.bits} bits cannot be stored packed (4 or 8 only); use storage: simulated"
                    )
        if method != "prequantized" and (self.source is not None or self.revision is not None):
            raise ValueError(f"source and revision apply to method 'prequantized' only; remove them for {where}")
        if method == "prequantized" and (self.overrides or self.calibration):
            raise ValueError("a prequantized checkpoint is loaded as it is; remove overrides and calibration")
        return self

    @property
    def is_cached(self) -> bool:
        """Whether the variant is built once into the variant cache (rtn, gptq, awq)."""
        return self.method in CACHED_METHODS

    @property
    def resolved_storage(self) -> str:
        """``packed``, ``simulated``, ``load-time``, ``prequantized`` or ``none``."""
        if self.method == "none":
            return "none"
        if self.method == "prequantized":
            return "prequantized"
        if self.method in LOAD_TIME_METHODS:
            return "load-time"
        if self.storage != "auto":
            return self.storage
        if self.method == "rtn":
            return "simulated"
        packable = self.bits in PACKABLE_BITS and all(o.bits in PACKABLE_BITS for o in self.overrides)
        return "packed" if packable else "simulated"

    @property
    def precision_bits(self) -> float:
        """Bits per weight, used to order variants from most to least precise (none = 32).

        For ``prequantized`` without ``bits`` this is unknown here; the planner reads the
        checkpoint's config (see :func:`cluster.quantization.prequantized.inspect_checkpoint`).
        """
        if self.method == "none" or self.bits is None:
            return FULL_PRECISION_BITS
        return float(self.bits)

    @property
    def label(self) -> str:
        """Short human label such as ``none``, ``rtn-w4-g64-asym`` or ``bnb-nf4``."""
        if self.method == "none":
            return "none"
        if self.method == "prequantized":
            return "prequantized" + (f"-w{self.bits}" if self.bits else "")
        if self.method == "bnb":
            return f"bnb-{self.bnb_type}"
        group = f"g{self.group_size}" if self.group_size is not None else "gch"
        sym = "sym" if self.symmetric else "asym"
        mixed = "-mixed" if self.overrides else ""
        return f"{self.method}-w{self.bits}-{group}-{sym}{mixed}"

    def describe(self) -> dict[str, str]:
        """Flat string description for run records."""
        out = {"method": self.method, "label": self.label, "storage": self.resolved_storage}
        if self.method in BIT_METHODS and self.method != "bnb":
            out.update(
                {
                    "bits": str(self.bits),
                    "group_size": "per-channel" if self.group_size is None else str(self.group_size),
                    "symmetric": str(self.symmetric).lower(),
                }
            )
        if self.bnb_type:
            out.update({"bits": str(self.bits), "bnb_type": self.bnb_type})
        if self.method != "none" and self.method != "prequantized":
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
        return self.model_dump(mode="json", exclude={"name"})
