"""The engine protocol shared by every inference backend.

An engine holds one loaded model variant and answers two kinds of requests: greedy generation
from a chat prompt, and log-likelihood scoring of candidate continuations (multiple choice).
A failure on one request is reported in that request's ``error`` field; the others still run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from trust.types import Message


@dataclass
class GenerationSettings:
    """Decoding settings; greedy by default so that results are reproducible."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    batch_size: int = 8


@dataclass
class GenerationRequest:
    id: str
    messages: list[Message]


@dataclass
class GenerationResult:
    id: str
    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None


@dataclass
class LoglikelihoodRequest:
    """Score each continuation after the chat prompt (the assistant turn's start)."""

    id: str
    messages: list[Message]
    continuations: list[str]


@dataclass
class LoglikelihoodResult:
    id: str
    logprobs: list[float] = field(default_factory=list)
    """Sum of token log-probabilities of each continuation, in request order."""
    prompt_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None


@runtime_checkable
class Engine(Protocol):
    """What every engine offers."""

    name: str

    def generate(self, requests: list[GenerationRequest], settings: GenerationSettings) -> list[GenerationResult]:
        """Generate one answer per request, results in request order."""
        ...

    def loglikelihood(
        self, requests: list[LoglikelihoodRequest], settings: GenerationSettings
    ) -> list[LoglikelihoodResult]:
        """Score the continuations of each request, results in request order."""
        ...

    def describe(self) -> dict[str, str]:
        """Engine name, library versions, device and dtype, for the record."""
        ...


def error_text(exc: BaseException) -> str:
    """How a failed request's ``error`` field describes the exception."""
    return f"{type(exc).__name__}: {exc}"
