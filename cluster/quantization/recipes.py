"""How a model variant is quantized: a small validated recipe.

A recipe is data (it travels in job configs and result records); applying it is the job of
:mod:`cluster.variant`. New methods (gptq, awq, ...) extend the ``method`` literal and add their
own checks in :meth:`QuantRecipe._check_consistency`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

#: Methods that need ``bits``.
_BIT_METHODS = frozenset({"rtn"})
MIN_BITS = 2
MAX_BITS = 8
#: What ``precision_bits`` reports for an unquantized model (ordering only: fp32 > any int).
FULL_PRECISION_BITS = 32.0


class QuantRecipe(BaseModel):
    """A weight-quantization recipe.

    * ``method="none"``: the model as loaded (``bits`` must be unset).
    * ``method="rtn"``: round-to-nearest weight quantization with ``bits`` in 2..8, one scale (and
      zero point unless ``symmetric``) per ``group_size`` consecutive input features of each
      output row, or per whole row when ``group_size`` is None.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["none", "rtn"] = "none"
    bits: int | None = None
    group_size: int | None = 64
    symmetric: bool = False

    @field_validator("bits")
    @classmethod
    def _check_bits(cls, value: int | None) -> int | None:
        if value is not None and not (MIN_BITS <= value <= MAX_BITS):
            raise ValueError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS} (got {value})")
        return value

    @field_validator("group_size")
    @classmethod
    def _check_group_size(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError(
                f"group_size must be a positive integer, or null for one scale per output channel (got {value})"
            )
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> "QuantRecipe":
        if self.method in _BIT_METHODS and self.bits is None:
            raise ValueError(f"bits is required for method {self.method!r} (an integer from {MIN_BITS} to {MAX_BITS})")
        if self.method == "none" and self.bits is not None:
            raise ValueError("bits must be null for method 'none' (no quantization); set method to 'rtn' to quantize")
        return self

    @property
    def precision_bits(self) -> float:
        """Bits per weight, used to order variants from most to least precise (none = 32)."""
        if self.method == "none" or self.bits is None:
            return FULL_PRECISION_BITS
        return float(self.bits)

    @property
    def label(self) -> str:
        """Short human label such as ``none`` or ``rtn-w4-g64-asym``."""
        if self.method == "none":
            return "none"
        group = f"g{self.group_size}" if self.group_size is not None else "gch"
        sym = "sym" if self.symmetric else "asym"
        return f"{self.method}-w{self.bits}-{group}-{sym}"

    def describe(self) -> dict[str, str]:
        """Flat string description for run records."""
        out = {"method": self.method, "label": self.label}
        if self.method != "none":
            out.update(
                {
                    "bits": str(self.bits),
                    "group_size": "per-channel" if self.group_size is None else str(self.group_size),
                    "symmetric": str(self.symmetric).lower(),
                }
            )
        return out
