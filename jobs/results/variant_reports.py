"""Quantization reports of variants, shaped for MLflow (params, metrics) and for tables."""

from __future__ import annotations

from typing import Any

import pandas as pd

from jobs.plan.build import Variant


def variants_table(variants: dict[str, Variant], quant_reports: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per variant: recipe, storage, real bits per weight (where the build reports them), size, build/load times, cache use and probe perplexity."""
    rows = []
    for variant in variants.values():
        report = quant_reports.get(variant.name, {})
        rows.append(
            {
                "variant": variant.name,
                "label": variant.recipe.label,
                "engine": variant.engine,
                "bits": variant.precision_bits,
                "storage": report.get("storage", variant.recipe.resolved_storage),
                "bits_per_weight": _float(report.get("bits_per_weight")),
                "size_mb": _mb(report.get("size_bytes")),
                "build_s": _float(report.get("build_s")),
                "load_s": _float(report.get("load_s")),
                "cache": report.get("cache", "-"),
                "probe_perplexity": _float(report.get("probe_perplexity")),
            }
        )
    return pd.DataFrame(rows)


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _mb(value: Any) -> float | None:
    size = _float(value)
    return None if size is None else size / 2**20


#: Report fields logged as metrics (numbers); the rest of a quantization report becomes params.
_QUANT_METRICS = {
    "probe_perplexity": "quant.probe_perplexity",
    "probe_tokens": "quant.probe_tokens",
    "quantize_s": "quant.quantize_s",
    "build_s": "quant.build_s",
    "load_s": "quant.load_s",
    "bits_per_weight": "quant.bits_per_weight",
}


def quant_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Numeric fields of a worker's quantization report, as MLflow metrics."""
    out = {name: _float(report.get(key)) for key, name in _QUANT_METRICS.items()}
    metrics = {k: v for k, v in out.items() if v is not None}
    size = _mb(report.get("size_bytes"))
    if size is not None:
        metrics["quant.size_mb"] = size
    return metrics


#: Report fields about the variant's weights, logged as run tags (searchable: ``tags.`variant.weights_sha256` = '...'``).
WEIGHTS_TAGS = {"weights_sha256": "variant.weights_sha256", "loaded_sha256": "variant.loaded_sha256"}


def weights_tags(report: dict[str, Any]) -> dict[str, str]:
    """The weights digests of a worker's quantization report (see :mod:`cluster.quantization.digest`) as MLflow tags."""
    return {tag: str(report[key]) for key, tag in WEIGHTS_TAGS.items() if report.get(key)}


def quant_params(report: dict[str, Any]) -> dict[str, Any]:
    """The other fields of a quantization report (storage, backend, cache, layers ...) as params."""
    skip = set(_QUANT_METRICS) | set(WEIGHTS_TAGS) | {"size_bytes", "method", "key", "created", "describe", "label"}
    return {f"quant.report.{k}": v for k, v in report.items() if k not in skip and not isinstance(v, (dict, list))}
