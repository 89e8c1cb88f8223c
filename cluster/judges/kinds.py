"""The judge registry: judge kind -> the :class:`~cluster.judges.kind_base.JudgeKind` that carries its behaviour.

A sweep's ``judges:`` section names a ``kind`` for each judge. Everything that differs between kinds
lives on the kind's entry, never in ``kind == ...`` branches elsewhere: its identity (what goes into a
judgment key), its requests, how its verdicts are read, its worker class (``module:Class``, imported
when a pool starts) and worker config, whether it reads a judge template, its default CPUs, its spec
checks and its tracking parameters. Every worker class offers the pool protocol of
:mod:`jobs.pipeline.scheduler` (``load``, ``ping``, ``run_shard``, ``close``) and answers a shard of
judge requests with the judge's raw text (or label scores) per request; the driver reads verdicts
from it with the kind's :meth:`~cluster.judges.kind_base.JudgeKind.read`.

How to add a judge kind
-----------------------
Write one module ``cluster/judges/kind_<name>.py`` holding a subclass of
:class:`~cluster.judges.kind_base.JudgeKind`: set ``name``, ``worker`` (``module:Class`` of an actor
class with the pool protocol; an existing one such as ``cluster.judges.workers:EndpointJudgeWorker``,
or a class in the same module), ``description``, ``needs_template`` and ``default_num_cpus``; implement
``worker_config`` and ``identity`` (keep the identity stable: it is hashed into every judgment key);
override ``own_problems`` for the spec fields the kind needs, and ``request`` / ``parse`` /
``labels`` / ``in_process`` when it reads no template (see :mod:`cluster.judges.kind_rule`). Then add
one line ``"<name>": "cluster.judges.kind_<name>:<Class>"`` to :data:`JUDGE_KINDS` below. Nothing
else changes: the spec accepts the name, and the planner, the pipeline, ``qtrust judge-eval`` and the
tracking read the kind's entry. (A kind needing a new spec field also needs that field on
``jobs.spec.schema.JudgeSpec``.)
"""

from __future__ import annotations

import importlib
from functools import cache

from cluster.judges.kind_base import JudgeKind

#: Judge kind name -> ``module:Class`` of its :class:`JudgeKind` (imported on first use).
JUDGE_KINDS: dict[str, str] = {
    "rule": "cluster.judges.kind_rule:RuleKind",
    "model": "cluster.judges.kind_model:ModelKind",
    "endpoint": "cluster.judges.kind_endpoint:EndpointKind",
}


@cache
def judge_kind(name: str) -> JudgeKind:
    """The entry of judge kind ``name`` (a :class:`KeyError` names the kinds there are)."""
    try:
        target = JUDGE_KINDS[name]
    except KeyError:
        raise KeyError(f"unknown judge kind {name!r}; available: {', '.join(JUDGE_KINDS)}") from None
    module, _, attr = target.partition(":")
    kind = getattr(importlib.import_module(module), attr)()
    if not isinstance(kind, JudgeKind) or kind.name != name:
        raise TypeError(f"{target} is not the JudgeKind of {name!r}")
    return kind


def worker_class(kind: str) -> type:
    """The actor class of a judge kind (imported now)."""
    return judge_kind(kind).worker_class()
