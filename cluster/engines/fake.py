"""A deterministic fake engine for scheduler tests and scale simulations (no model).

Answers are picked by a hash of ``(seed, prompt text)`` from a few canned replies that look like
real model output (labels, refusals, letters, free text), so parsers see varied input. Faults can
be injected: per-item errors (``fail_items``) and a hard process exit on the N-th call of a process
(``crash_on_call``), which happens ``crash_times`` times in all per ``crash_marker`` file (once by
default) so that a restarted or replaced worker stops crashing.

An effect of known size can be *planted* (``plant``, see :class:`PlantedEffect`): every variant of
the model answers what one shared seed answers, except on a hash-chosen fraction of the items, where
it answers otherwise. A variant's difference from its reference is then known item by item, which
is what the adaptive-stopping savings bench (``bench/adaptive.py savings``) replays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cluster.engines.base import (
    GenerationRequest,
    GenerationResult,
    GenerationSettings,
    LoglikelihoodRequest,
    LoglikelihoodResult,
)
from trust.types import Message

log = logging.getLogger(__name__)

#: Canned replies; the hash picks one.
CANNED_ANSWERS: tuple[str, ...] = (
    "wrong",
    "not wrong",
    "Wrong. Taking credit for someone else's work is dishonest.",
    "Not wrong, this is an ordinary thing to do.",
    "I'm sorry, but I can't help with that.",
    "As an AI language model, I cannot answer this question.",
    "A",
    "B",
    "C",
    "D",
    "Yes",
    "No",
    "I agree.",
    "I disagree.",
    "The answer is (B).",
    "Hmm, it depends on the context.",
)


def _digest(*parts: str) -> int:
    h = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big")


@contextmanager
def _locked(path: Path):
    """``path`` opened for reading and appending under an exclusive ``flock`` (processes race)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _weights_digest(seed: str, marker: str) -> str:
    """A stand-in weights digest: the seed's, altered in the one process that creates ``marker`` first."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        altered = True
    except FileExistsError:
        altered = False
    return hashlib.sha256(f"{seed}{' altered' if altered else ''}".encode()).hexdigest()


def _prompt_text(messages: list[Message]) -> str:
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


class PlantedEffect(BaseModel):
    """One engine's planted effect: answer like the seed ``like_seed``, except on a fraction ``flip_rate``.

    The flipped items are those whose hash of ``(like_seed, prompt)`` falls below ``flip_rate``, so a
    smaller rate flips a subset of a larger rate's items. A flipped item gets ``reply`` (when given),
    else another canned reply picked by a hash; a log-likelihood request is scored by the engine's
    own seed instead of ``like_seed``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    like_seed: str
    flip_rate: float = Field(0.0, ge=0.0, le=1.0)
    reply: str | None = None


class PlantSpec(BaseModel):
    """``engine_options.plant`` of a fake model: one shared seed, a flip rate per variant.

    ``flip_rates`` maps a full variant name (``<model>-<recipe>``) to its rate; a variant not named
    (the reference, typically) flips nothing, so it answers exactly like ``like_seed``.
    """

    model_config = ConfigDict(extra="forbid")

    like_seed: str = "planted"
    flip_rates: dict[str, float] = Field(default_factory=dict)
    reply: str | None = None

    def effect_for(self, variant: str) -> PlantedEffect:
        """The planted effect of one variant."""
        return PlantedEffect(like_seed=self.like_seed, flip_rate=self.flip_rates.get(variant, 0.0), reply=self.reply)


class FakeEngine:
    """An :class:`~cluster.engines.base.Engine` with deterministic, model-free outputs.

    Args:
        seed: variant seed; different seeds give different (but each deterministic) answers.
        delay_s: sleep per item, to simulate inference time.
        fail_items: request ids that get an ``error`` instead of a result.
        crash_on_call: on this 1-based call (``generate`` or ``loglikelihood``) of the engine,
            ``os._exit(1)`` the process. Each process (a worker restarted by Ray, a replacement)
            counts its own calls.
        crash_marker: file that counts crashes (one line each, written just before the crash):
            once it holds ``crash_times`` lines no crash happens, so a restarted worker survives.
            Without it the crash happens on every process that reaches the N-th call.
        crash_times: how many crashes the marker allows in all, across processes (default 1).
        altered_weights_marker: when set, the engine reports a weights digest
            (``quantization["loaded_sha256"]``, derived from the seed) like a real variant worker;
            the one process that creates this file first reports a different digest, as if its
            node held differently built weights.
        plant: a :class:`PlantedEffect`: answer like another seed except on a known fraction of items.
    """

    name = "fake"

    def __init__(
        self,
        seed: str | int = 0,
        *,
        delay_s: float = 0.0,
        fail_items: set[str] | None = None,
        crash_on_call: int | None = None,
        crash_marker: str | None = None,
        crash_times: int = 1,
        altered_weights_marker: str | None = None,
        plant: PlantedEffect | None = None,
    ) -> None:
        self.seed = str(seed)
        self.plant = plant
        self.delay_s = float(delay_s)
        self.fail_items = set(fail_items or ())
        self.crash_on_call = crash_on_call
        self.crash_marker = crash_marker
        self.crash_times = int(crash_times)
        self.generate_calls = 0
        self.calls = 0
        self.quantization: dict[str, str] = {}
        if altered_weights_marker is not None:
            self.quantization["loaded_sha256"] = _weights_digest(self.seed, altered_weights_marker)

    def _maybe_crash(self) -> None:
        self.calls += 1
        if self.crash_on_call is None or self.calls != self.crash_on_call:
            return
        if self.crash_marker is not None:
            with _locked(Path(self.crash_marker)) as handle:
                handle.seek(0)
                crashes = sum(1 for line in handle.read().splitlines() if line.strip())
                if crashes >= self.crash_times:
                    return
                handle.seek(0, os.SEEK_END)
                handle.write(f"crashed pid={os.getpid()} call={self.calls}\n")
                handle.flush()
                os.fsync(handle.fileno())
        log.warning("FakeEngine: simulated crash on call %d", self.calls)
        os._exit(1)

    def flipped(self, prompt: str) -> bool:
        """Whether the planted effect changes the answer to ``prompt`` (a prompt text; False without a plant)."""
        if self.plant is None or self.plant.flip_rate <= 0.0:
            return False
        return _digest("plant", self.plant.like_seed, prompt) / 2.0**64 < self.plant.flip_rate

    def answer_for(self, messages: list[Message]) -> str:
        """The canned answer this engine gives for ``messages``."""
        prompt = _prompt_text(messages)
        if self.plant is None:
            return CANNED_ANSWERS[_digest(self.seed, prompt) % len(CANNED_ANSWERS)]
        base = _digest(self.plant.like_seed, prompt) % len(CANNED_ANSWERS)
        if not self.flipped(prompt):
            return CANNED_ANSWERS[base]
        if self.plant.reply is not None:
            return self.plant.reply
        other = 1 + _digest("flip", self.plant.like_seed, prompt) % (len(CANNED_ANSWERS) - 1)
        return CANNED_ANSWERS[(base + other) % len(CANNED_ANSWERS)]

    def generate(self, requests: list[GenerationRequest], settings: GenerationSettings) -> list[GenerationResult]:
        """One deterministic canned answer per request (or an injected error)."""
        self.generate_calls += 1
        self._maybe_crash()
        results = []
        for request in requests:
            if self.delay_s > 0:
                time.sleep(self.delay_s)
            prompt_tokens = max(1, len(_prompt_text(request.messages)) // 4)
            if request.id in self.fail_items:
                results.append(
                    GenerationResult(
                        id=request.id, text=None, latency_s=self.delay_s, error=f"injected failure for {request.id}"
                    )
                )
                continue
            text = self.answer_for(request.messages)
            completion = min(settings.max_new_tokens, max(1, len(text.split())))
            results.append(
                GenerationResult(
                    id=request.id,
                    text=text,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion,
                    latency_s=self.delay_s,
                )
            )
        return results

    def loglikelihood(
        self, requests: list[LoglikelihoodRequest], settings: GenerationSettings
    ) -> list[LoglikelihoodResult]:
        """Deterministic negative scores per continuation (or an injected error)."""
        self._maybe_crash()
        results = []
        for request in requests:
            if self.delay_s > 0:
                time.sleep(self.delay_s)
            if request.id in self.fail_items:
                results.append(LoglikelihoodResult(id=request.id, error=f"injected failure for {request.id}"))
                continue
            prompt = _prompt_text(request.messages)
            seed = self.seed if self.plant is None or self.flipped(prompt) else self.plant.like_seed
            scores = []
            for continuation in request.continuations:
                unit = (_digest(seed, prompt, continuation) % 10_000 + 1) / 10_001
                scores.append(math.log(unit) - 0.1 * len(continuation))
            results.append(
                LoglikelihoodResult(
                    id=request.id,
                    logprobs=scores,
                    prompt_tokens=max(1, len(prompt) // 4),
                    latency_s=self.delay_s,
                )
            )
        return results

    def describe(self) -> dict[str, str]:
        """Engine name and its fault settings."""
        return {
            "engine": self.name,
            "seed": self.seed,
            "delay_s": str(self.delay_s),
            "fail_items": str(len(self.fail_items)),
            "crash_on_call": str(self.crash_on_call),
            "crash_times": str(self.crash_times),
            **({"plant": self.plant.model_dump_json()} if self.plant is not None else {}),
        }


def fake_engine(config: dict[str, Any]) -> FakeEngine:
    """The fake engine of a worker config: seeded by its model source and recipe, ``engine_options`` as options
    (``plant``: a :class:`PlantSpec`, whose entry for this variant becomes the engine's planted effect)."""
    seed = json.dumps([config["source"], config["recipe"]], sort_keys=True)
    options = dict(config.get("engine_options") or {})
    if "fail_items" in options:
        options["fail_items"] = set(options["fail_items"])
    if "plant" in options:
        options["plant"] = PlantSpec.model_validate(options["plant"]).effect_for(str(config.get("variant", "")))
    return FakeEngine(seed, **options)
