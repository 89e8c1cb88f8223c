"""Helpers shared by the engine tests."""

from __future__ import annotations

from typing import Any

import pytest

#: The last message of a request that :func:`fail_to_render` makes unrenderable.
UNRENDERABLE = "BOOM"


def fail_to_render(engine: Any, monkeypatch: pytest.MonkeyPatch, marker: str = UNRENDERABLE) -> None:
    """Make ``engine``'s prompt rendering raise for any request whose last message is ``marker``."""
    original = engine.prompts.text

    def flaky(messages: list[dict[str, str]]) -> str:
        if messages[-1]["content"] == marker:
            raise RuntimeError("cannot render this prompt")
        return original(messages)

    monkeypatch.setattr(engine.prompts, "text", flaky)
