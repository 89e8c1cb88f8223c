"""Build a cached variant again and compare its weights with the cache entry's (``qtrust quantize --rebuild-check``).

A variant key names what goes into a build (model, recipe, calibration text, dtype), not what
comes out: a quantizer that is not bit-reproducible (float reductions that depend on the CPU's
vector width or the thread count, a different torch) gives different weights under the same key
on another machine. This check rebuilds the variant where it runs, into a temporary folder, and
compares the digests (:mod:`cluster.quantization.digest`) of the rebuilt weights, of the cached
files as they are now, and of what the cache entry recorded when it was built.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cluster.engines.device import pick_device
from cluster.quantization.build import build_checkpoint
from cluster.quantization.digest import checkpoint_digest, largest_difference
from cluster.variants.factory import variant_source
from cluster.variants.source import variant_cache_of


class RebuildCheck(BaseModel):
    """What one rebuild check found (``status``: ``match``, ``mismatch``, ``skipped`` or ``missing``)."""

    variant: str
    status: str
    detail: str = ""
    """Why it was skipped, or where the weights differ."""
    cached_sha256: str | None = None
    """Digest of the cache entry's files as they are now."""
    recorded_sha256: str | None = None
    """Digest the entry recorded when it was built (None for entries built before digests were kept)."""
    rebuilt_sha256: str | None = None
    rebuild_s: float | None = None
    threads: int | None = None
    """torch threads of the rebuild."""
    host: str | None = None

    @property
    def files_changed(self) -> bool:
        """The cached files no longer hold the weights the build recorded."""
        return bool(self.recorded_sha256 and self.cached_sha256 and self.recorded_sha256 != self.cached_sha256)


def rebuild_check(
    config: dict[str, Any], cache_dir: str | None = None, num_threads: int | None = None
) -> dict[str, Any]:
    """Rebuild the variant of a worker config into a temporary folder and compare it with its cache entry.

    Returns a :class:`RebuildCheck` as a dict (it crosses Ray). Variants that are not built into
    the cache (none, load-time and prequantized methods) are ``skipped``; a variant whose entry is
    not in the cache is ``missing``.
    """
    import socket

    import torch

    name = str(config.get("variant"))
    if num_threads:
        torch.set_num_threads(num_threads)
    source = variant_source(config, cache_dir=Path(cache_dir) if cache_dir else None)
    recipe = source.recipe
    if not recipe.quant_method.is_cached or source.variant_key is None:
        return RebuildCheck(
            variant=name, status="skipped", detail=f"method {recipe.method} builds nothing"
        ).model_dump()
    entry = variant_cache_of(source).lookup(source.variant_key)
    if entry is None:
        return RebuildCheck(
            variant=name, status="missing", detail=f"variant {source.variant_key} is not in the cache"
        ).model_dump()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qtrust-rebuild-") as tmp:
        build_checkpoint(
            source.model_path,
            recipe,
            Path(tmp),
            calibration_texts=source.calibration_texts,
            dtype=str(config.get("dtype", "float32")),
            device=pick_device(),
            trust_remote_code=bool(config.get("trust_remote_code", False)),
        )
        rebuilt = checkpoint_digest(Path(tmp))
        cached = checkpoint_digest(entry.path)
        same = rebuilt is not None and rebuilt == cached
        detail = "" if same else largest_difference(entry.path, Path(tmp)).describe()
    return RebuildCheck(
        variant=name,
        status="match" if same else "mismatch",
        detail=detail,
        cached_sha256=cached,
        recorded_sha256=entry.meta.get("weights_sha256"),
        rebuilt_sha256=rebuilt,
        rebuild_s=round(time.perf_counter() - started, 3),
        threads=torch.get_num_threads(),
        host=socket.gethostname(),
    ).model_dump()
