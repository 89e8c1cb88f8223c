"""Options of one run given on the command line (`qtrust run/resume/quantize`): they override or
complete the spec and never change a key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunOptions:
    """Command-line settings that override or complete the spec (none of them changes a key)."""

    data_dir: str | Path | None = None
    limit: int | None = None
    address: str | None = None
    tracking_uri: str | None = None
    storage_root: str | Path | None = None
    cache_dir: str | Path | None = None
    variant_cache: str | None = None
    response_cache: str | None = None
    quiet: bool = False
    resume: bool = False
    stop_deadline_s: float = 60.0
    """After a first Ctrl-C, how long shards in flight may take to finish and commit."""
    num_cpus: int | None = None
    """CPUs of a private local Ray (default: all of the machine's)."""
    verify_store: bool = False
    """Read and verify every stored shard against its digest instead of trusting the scan index."""
    judge_only: bool = False
    """Generate nothing: only judge stored answers that lack a judgment (``qtrust judge``)."""
