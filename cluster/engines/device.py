"""The device an engine runs on.

Building an engine from a worker config needs the variant (its cache, its quantization), which is
the job of :func:`cluster.variants.factory.build_engine`; the engines themselves are listed in
:mod:`cluster.engines.kinds`.
"""

from __future__ import annotations


def pick_device() -> str:
    """``cuda`` when the worker sees a GPU (Ray sets ``CUDA_VISIBLE_DEVICES`` per bundle), else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
