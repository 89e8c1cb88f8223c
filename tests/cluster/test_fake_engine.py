"""The fake engine used by scheduler tests and scale simulations."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from cluster.engines.base import (
    Engine,
    GenerationRequest,
    GenerationSettings,
    LoglikelihoodRequest,
)
from cluster.engines.fake import CANNED_ANSWERS, FakeEngine

REPO = Path(__file__).resolve().parents[2]


def _requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(id=f"i{k}", messages=[{"role": "user", "content": f"question {k}"}]) for k in range(n)]


def test_protocol_and_determinism() -> None:
    engine = FakeEngine(seed="w4")
    assert isinstance(engine, Engine) and engine.name == "fake"
    settings = GenerationSettings()
    a = engine.generate(_requests(50), settings)
    b = FakeEngine(seed="w4").generate(_requests(50), settings)
    c = FakeEngine(seed="w8").generate(_requests(50), settings)
    assert [r.text for r in a] == [r.text for r in b]
    assert [r.text for r in a] != [r.text for r in c]
    assert [r.id for r in a] == [f"i{k}" for k in range(50)]
    assert all(r.error is None and r.prompt_tokens > 0 and r.completion_tokens > 0 for r in a)
    assert engine.describe()["engine"] == "fake"


def test_outputs_are_varied() -> None:
    texts = {r.text for r in FakeEngine(seed=1).generate(_requests(300), GenerationSettings())}
    assert texts <= set(CANNED_ANSWERS)
    assert len(texts) >= 12
    assert {"wrong", "not wrong"} <= texts
    assert any("sorry" in t.lower() or "cannot" in t.lower() for t in texts)


def test_fail_items_and_delay() -> None:
    engine = FakeEngine(seed=0, delay_s=0.01, fail_items={"i1"})
    started = time.perf_counter()
    results = engine.generate(_requests(3), GenerationSettings())
    assert time.perf_counter() - started >= 0.03
    assert results[1].text is None and "injected failure" in (results[1].error or "")
    assert results[0].error is None and results[2].error is None
    scored = engine.loglikelihood(
        [
            LoglikelihoodRequest(id=i, messages=[{"role": "user", "content": "q"}], continuations=["a", "bb"])
            for i in ("i0", "i1")
        ],
        GenerationSettings(),
    )
    assert scored[0].error is None and len(scored[0].logprobs) == 2 and all(v < 0 for v in scored[0].logprobs)
    assert scored[1].error is not None and scored[1].logprobs == []


def test_crash_once_per_marker(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    script = textwrap.dedent(
        f"""
        from cluster.engines.base import GenerationRequest, GenerationSettings
        from cluster.engines.fake import FakeEngine
        engine = FakeEngine(seed=0, crash_on_call=2, crash_marker={str(marker)!r})
        req = [GenerationRequest(id="a", messages=[{{"role": "user", "content": "hi"}}])]
        for _ in range(3):
            engine.generate(req, GenerationSettings())
            print("call done", flush=True)
        """
    )
    first = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert first.returncode == 1, first.stderr
    assert first.stdout.count("call done") == 1
    assert marker.exists()
    second = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("call done") == 3
