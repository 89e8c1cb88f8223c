"""Replicas of one variant must compute with the same weights: compare the digests they report.

Every variant worker reports ``quantization.loaded_sha256`` when it loads (the digest of the
weights it holds, :mod:`cluster.quantization.digest`). Replicas placed on different nodes may
find different variant caches (or a mirror damaged on one node); then their answers depend on
which replica served a shard, and the warning built here names the variant and the nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Characters of a digest shown in messages.
SHORT = 12


def loaded_digest(load: dict[str, Any]) -> str | None:
    """The ``loaded_sha256`` of a worker's load report (None when the engine reports none, e.g. fake)."""
    digest = (load.get("quantization") or {}).get("loaded_sha256")
    return str(digest) if digest else None


def where(load: dict[str, Any]) -> str:
    """The node a worker runs on, as shown in messages (its IP, else its host)."""
    placement = load.get("placement") or {}
    return str(placement.get("node_ip") or placement.get("host") or "?")


@dataclass
class ReplicaWeights:
    """What each replica of each variant loaded, and which disagreements were already reported."""

    loaded: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)
    """Variant -> replica index -> (digest, node)."""
    reported: set[tuple[str, frozenset[str]]] = field(default_factory=set)

    def observe(self, variant: str, index: int, load: dict[str, Any]) -> str | None:
        """Record what replica ``index`` of ``variant`` loaded; a warning line when replicas now disagree.

        Each set of disagreeing digests of a variant is reported once.
        """
        digest = loaded_digest(load)
        if digest is None:
            return None
        replicas = self.loaded.setdefault(variant, {})
        replicas[index] = (digest, where(load))
        digests = frozenset(d for d, _ in replicas.values())
        if len(digests) < 2 or (variant, digests) in self.reported:
            return None
        self.reported.add((variant, digests))
        listed = ", ".join(f"replica {i} on {node}: {d[:SHORT]}" for i, (d, node) in sorted(replicas.items()))
        return (
            f"{variant}: replicas loaded different weights ({listed}); its answers depend on which replica "
            "served them. Compare the variant caches of those nodes (qtrust quantize --rebuild-check there)."
        )
