"""Engine-level helpers for building engines (the device a worker runs on).

Building an engine from a worker config needs the variant (its cache, its quantization), which is
the job of :func:`cluster.variants.factory.build_engine`; the engines themselves are listed in
:mod:`cluster.engines.kinds`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.engines.base import Engine
from cluster.quantization.methods import resolve


def pick_device() -> str:
    """``cuda`` when the worker sees a GPU (Ray sets ``CUDA_VISIBLE_DEVICES`` per bundle), else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_engine(config: dict[str, Any], *, cache_dir: Path | None = None, num_threads: int | None = None) -> Engine:
    """Deprecated: use :func:`cluster.variants.factory.build_engine`.

    Kept only while ``cluster/variants/worker.py`` imports ``build_engine`` from here; it forwards
    by name at call time. Delete it once that import names ``cluster.variants.factory``.
    """
    forward = resolve("cluster.variants.factory:build_engine")
    return forward(config, cache_dir=cache_dir, num_threads=num_threads)
