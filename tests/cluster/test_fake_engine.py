"""The fake engine used by scheduler tests and scale simulations."""

from __future__ import annotations

import json
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


def test_planted_effect_flips_a_known_fraction_of_answers() -> None:
    from cluster.engines.fake import PlantedEffect, fake_engine

    settings = GenerationSettings()
    requests = _requests(2000)
    base = [r.text for r in FakeEngine(seed="planted").generate(requests, settings)]
    same = FakeEngine(seed="ref", plant=PlantedEffect(like_seed="planted", flip_rate=0.0))
    assert [r.text for r in same.generate(requests, settings)] == base  # rate 0: the shared seed's answers
    low = FakeEngine(seed="w8", plant=PlantedEffect(like_seed="planted", flip_rate=0.1))
    high = FakeEngine(seed="w4", plant=PlantedEffect(like_seed="planted", flip_rate=0.3))
    low_texts = [r.text for r in low.generate(requests, settings)]
    high_texts = [r.text for r in high.generate(requests, settings)]
    low_flips = {i for i, (a, b) in enumerate(zip(base, low_texts)) if a != b}
    high_flips = {i for i, (a, b) in enumerate(zip(base, high_texts)) if a != b}
    assert 0.08 < len(low_flips) / 2000 < 0.12 and 0.27 < len(high_flips) / 2000 < 0.33
    assert low_flips <= high_flips  # one hash picks the flipped items: a smaller rate flips a subset
    assert low_flips == {i for i, r in enumerate(requests) if low.flipped(json.dumps(r.messages, sort_keys=True))}

    refusal = "I'm sorry, but I can't help with that."
    config = {
        "source": "bench/planted",
        "recipe": {"method": "rtn", "bits": 4},
        "variant": "m-w4",
        "engine_options": {"plant": {"like_seed": "planted", "flip_rates": {"m-w4": 0.3}, "reply": refusal}},
    }
    planted = fake_engine(config)
    texts = [r.text for r in planted.generate(requests, settings)]
    assert all(texts[i] == refusal for i in high_flips)
    assert all(texts[i] == base[i] for i in set(range(2000)) - high_flips)
    reference = fake_engine({**config, "variant": "m-ref", "recipe": {"method": "none"}})
    assert [r.text for r in reference.generate(requests, settings)] == base  # not named: flips nothing
