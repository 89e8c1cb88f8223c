"""Torch dtypes by name: what a sweep's `dtype:` field accepts."""

from __future__ import annotations

import torch


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map ``"float32"``/``"bf16"``/... (or a torch dtype) to a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}") from None


_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
