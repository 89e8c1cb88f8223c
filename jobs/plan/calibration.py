"""Calibration text for GPTQ/AWQ, resolved on the driver and sent to the worker that quantizes.

Resolving here keeps workers free of data folders and makes the text part of the variant's key:
editing a calibration file, or picking another sample, gives another variant.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from cluster.quantization.recipes import CalibrationSpec
from cluster.quantization.texts import load_text_set
from trust.benchmarks.catalog import get_benchmark


@dataclass(frozen=True)
class CalibrationSet:
    """The drawn calibration samples and their digest."""

    texts: list[str]
    digest: str
    available: int
    """How many samples the source holds (``len(texts)`` is at most ``spec.samples``)."""


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]


def _source_texts(source: str, data_dir: Path | None) -> list[str]:
    if source == "builtin":
        return load_text_set("calibration")
    if source.startswith("benchmark:"):
        if data_dir is None:
            raise ValueError(f"calibration source {source!r} needs the benchmark data folder")
        benchmark = get_benchmark(source.removeprefix("benchmark:"))
        items = benchmark.load(data_dir, None)
        return ["\n".join(m["content"] for m in item.messages) for item in items]
    path = Path(source).expanduser()
    return _paragraphs(path.read_text(encoding="utf-8"))


def resolve_calibration(spec: CalibrationSpec, data_dir: Path | None) -> CalibrationSet:
    """Draw ``spec.samples`` texts from ``spec.source`` with ``spec.seed`` (all of them if fewer).

    Raises:
        ValueError: the source holds no text.
    """
    pool = _source_texts(spec.source, data_dir)
    if not pool:
        raise ValueError(f"calibration source {spec.source!r} holds no text")
    count = min(spec.samples, len(pool))
    texts = random.Random(spec.seed).sample(pool, count)
    payload = {"texts": texts, "seq_len": spec.seq_len}
    digest = hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()
    return CalibrationSet(texts=texts, digest=digest, available=len(pool))
