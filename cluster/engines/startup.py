"""What an engine process imports at start: transformers' optional backends it does not need.

transformers imports optional packages it finds installed in modules every engine loads:
``cache_utils`` imports hqq (whose import compiles its kernels with ``torch.compile``) and
``generation.candidate_generator`` imports scikit-learn (for assisted decoding). A worker process
that serves one variant needs neither unless its variant is quantized with hqq; skipping them
saves about 2.5 s of CPU per worker start (measured on 2 cores: 9.5 s → 7.1 s to import, load a
small model and generate). :func:`skip_optional_imports` makes transformers see them as absent in
this process; it only acts before transformers has imported those modules, and only in Ray
worker processes (:func:`in_ray_worker`), never in a driver or a test process that may load an
hqq variant later.
"""

from __future__ import annotations

import sys
from collections.abc import Collection

#: Optional packages transformers imports eagerly when installed → its availability check.
OPTIONAL_IMPORTS = {"hqq": "is_hqq_available", "sklearn": "is_sklearn_available"}
#: transformers modules that import them; once one is imported, skipping is too late.
_IMPORTERS = ("transformers.cache_utils", "transformers.generation.candidate_generator")


def in_ray_worker() -> bool:
    """Whether this process is a Ray worker (an actor's or a task's process)."""
    if "ray" not in sys.modules:
        return False
    try:
        import ray

        return bool(ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE)
    except Exception:  # pragma: no cover - an older or partial Ray
        return False


def skip_optional_imports(keep: Collection[str] = ()) -> list[str]:
    """Make transformers treat the packages of :data:`OPTIONAL_IMPORTS` not in ``keep`` as absent.

    Returns the packages skipped (none when transformers already imported the modules that use
    them). Direct imports (``import sklearn``) still work; only transformers' checks change.
    """
    if any(name in sys.modules for name in _IMPORTERS):
        return []
    import transformers.utils as utils
    import transformers.utils.import_utils as import_utils

    skipped = []
    for package, check in OPTIONAL_IMPORTS.items():
        if package in keep:
            continue
        for module in (utils, import_utils):
            setattr(module, check, _absent)
        skipped.append(package)
    return skipped


def _absent(*_args: object, **_kwargs: object) -> bool:
    return False


def prepare_worker_process(method: str | None) -> list[str]:
    """In a Ray worker that will load a variant of quantization ``method``: skip what it does not need."""
    if not in_ray_worker():
        return []
    return skip_optional_imports(keep={"hqq"} if method == "hqq" else ())
