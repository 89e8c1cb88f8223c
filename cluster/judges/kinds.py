"""The judge registry: judge kind -> the actor class that serves it (imported lazily).

A sweep's ``judges:`` section names a ``kind`` for each judge. Adding a kind touches this file
only: one :class:`JudgeKind` entry naming the worker class (``module:Class``, imported when a pool
starts) and what the kind needs from the spec. Every worker class offers the pool protocol of
:mod:`jobs.pipeline.scheduler` (``load``, ``ping``, ``run_shard``, ``close``) and answers a shard of
judge requests with the judge's raw text per request; the driver reads labels from that text.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class JudgeKind:
    """One kind of judge."""

    name: str
    worker: str
    """``module:Class`` of the actor class."""
    description: str
    needs_template: bool
    """Whether the judge reads a judge template (prompts and output format)."""
    default_num_cpus: float


JUDGE_KINDS: dict[str, JudgeKind] = {
    kind.name: kind
    for kind in (
        JudgeKind(
            "rule",
            "cluster.judges.workers:RuleJudgeWorker",
            "qtrust's refusal rules as a three-way or binary judge (no model, no network)",
            False,
            0.05,
        ),
        JudgeKind(
            "model",
            "cluster.variants.worker:VariantWorker",
            "an LLM held by a pool of Ray actors (any model source qtrust loads; hf or vllm)",
            True,
            1.0,
        ),
        JudgeKind(
            "endpoint",
            "cluster.judges.workers:EndpointJudgeWorker",
            "any OpenAI-compatible chat endpoint (vLLM server, Ray Serve LLM, a hosted API)",
            True,
            0.05,
        ),
    )
}


def judge_kind(name: str) -> JudgeKind:
    try:
        return JUDGE_KINDS[name]
    except KeyError:
        raise KeyError(f"unknown judge kind {name!r}; available: {', '.join(JUDGE_KINDS)}") from None


def worker_class(kind: str) -> type:
    """The actor class of a judge kind (imported now)."""
    module, _, attr = judge_kind(kind).worker.partition(":")
    return getattr(importlib.import_module(module), attr)
