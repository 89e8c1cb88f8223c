"""Option scoring and generation that compute shared prefixes once equal the full computation;
sorted batching keeps request order; the engine's ``hf:`` settings change no key.

The per-option path (``HFEngine.loglikelihood_per_option``) is the reference for scoring: each
option a full left-padded sequence. The prefix path must give the same log-probabilities (float32,
1e-4). For generation, ``prefix_generation: false`` (every prompt in full) is the reference and the
greedy answers must be identical.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.engines.base import (
    GenerationRequest,
    GenerationSettings,
    LoglikelihoodRequest,
    LoglikelihoodResult,
)
from cluster.engines.batching import in_request_order, length_sorted_batches
from cluster.engines.hf import HFEngine
from cluster.engines.hf_scoring import common_prefix_len, item_prefix_len
from cluster.engines.hf_settings import HFSettings
from tests.support.engine_helpers import fail_to_render

TOL = 1e-4
SYSTEM = {"role": "system", "content": "You are a helpful assistant. Think step by step before you answer. " * 3}


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path, one_torch_thread: None) -> HFEngine:
    return HFEngine.from_pretrained(tiny_model_dir, dtype="float32", device="cpu")


def _max_delta(old: list[LoglikelihoodResult], new: list[LoglikelihoodResult]) -> float:
    assert [r.id for r in old] == [r.id for r in new]
    deltas = []
    for a, b in zip(old, new):
        assert a.error is None and b.error is None, (a.error, b.error)
        assert len(a.logprobs) == len(b.logprobs)
        assert a.prompt_tokens == b.prompt_tokens
        deltas.extend(abs(x - y) for x, y in zip(a.logprobs, b.logprobs))
    return max(deltas)


def _merges(engine: HFEngine, messages: list[dict[str, str]], continuation: str) -> bool:
    """True when the continuation's first token merges with the prompt's last token(s)."""
    prompt_ids = engine.prompts.prompt_ids(messages)
    full = engine.prompts.encode(engine.prompts.text(messages) + continuation)
    return full[: len(prompt_ids)] != prompt_ids


def _hand_made() -> list[LoglikelihoodRequest]:
    user = lambda text: [SYSTEM, {"role": "user", "content": text}]  # noqa: E731
    return [
        # options of different lengths, a one-token option, an empty continuation
        LoglikelihoodRequest(
            "lengths", user("Is it wrong?"), ["wrong", "not wrong", " The quick brown fox jumps", "x", ""]
        ),
        LoglikelihoodRequest("newlines", user("Capital of France"), ["\n\nParis", "Rome", "\nParis"]),
        LoglikelihoodRequest("numbers", user("Numbers: 0 1 2"), [" 3", "3 4 5 6 7 8 9 10 100 1000."]),
        # plain completion prompts whose last tokens merge with some options' first tokens
        LoglikelihoodRequest(
            "merge", [{"role": "completion", "content": "The capital of Fra"}], ["nce is Paris.", " Italy", "nce"]
        ),
        LoglikelihoodRequest("merge-all", [{"role": "completion", "content": "Is it wro"}], ["ng", "ng or not wrong"]),
        LoglikelihoodRequest("single", [{"role": "completion", "content": "She said yes,"}], [" he"]),
    ]


# -- helpers --------------------------------------------------------------------------------------


def test_common_prefix_and_item_split() -> None:
    assert common_prefix_len([]) == 0
    assert common_prefix_len([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_len([[5, 6], [5, 6]]) == 2
    assert common_prefix_len([[1], [2]]) == 0
    # The split never passes a scored token: the merged option starts scoring at index 2.
    assert item_prefix_len([([1, 2, 3, 4], 1), ([1, 2, 3, 5, 6], 2), ([1, 2, 9], 1)]) == 2
    # Identical options: the split stops before the scored tokens.
    assert item_prefix_len([([1, 2, 3], 1), ([1, 2, 3], 1)]) == 2
    # An empty continuation (nothing scored) does not constrain the split.
    assert item_prefix_len([([1, 2, 3], 0), ([1, 2, 3, 4], 1)]) == 3


def test_length_sorted_batches_and_order() -> None:
    batches = length_sorted_batches([3, 9, 1, 9, 5], 2)
    assert batches == [[1, 3], [4, 0], [2]]
    assert sorted(i for b in batches for i in b) == list(range(5))
    assert length_sorted_batches([], 4) == []
    assert in_request_order({1: "b", 0: "a"}, 2) == ["a", "b"]
    with pytest.raises(RuntimeError):
        in_request_order({0: "a"}, 2)


# -- equality on the tiny model ---------------------------------------------------------------------


def test_hand_made_requests_cover_the_boundary_cases(engine: HFEngine) -> None:
    requests = {r.id: r for r in _hand_made()}
    assert _merges(engine, requests["merge"].messages, "nce is Paris.")
    assert not _merges(engine, requests["merge"].messages, " Italy")
    assert all(_merges(engine, requests["merge-all"].messages, c) for c in requests["merge-all"].continuations)
    one = engine.prompts.continuation_sequences(requests["lengths"].messages, ["x"])[1][0][1]
    assert one == 1


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_prefix_scoring_equals_per_option(engine: HFEngine, batch_size: int) -> None:
    requests = _hand_made()
    settings = GenerationSettings(batch_size=batch_size)
    old = engine.loglikelihood_per_option(requests, settings)
    new = engine.loglikelihood(requests, settings)
    assert _max_delta(old, new) <= TOL
    lengths = next(r for r in new if r.id == "lengths")
    assert lengths.logprobs[4] == 0.0  # the empty continuation
    assert all(v < 0 for v in lengths.logprobs[:4])


def test_shared_prefix_is_computed_once_and_reused(engine: HFEngine) -> None:
    chat = [r for r in _hand_made() if r.messages[0] is SYSTEM]
    settings = GenerationSettings(batch_size=8)
    old = engine.loglikelihood_per_option(chat, settings)
    engine.scorer._shared.clear()
    passes = engine.scorer.forward_passes
    new = engine.loglikelihood(chat, settings)
    # shared prefix, item prefixes, one tail forward: three passes for all three items
    assert engine.scorer.forward_passes - passes == 3
    assert len(engine.scorer._shared) == 1
    (shared_ids,) = engine.scorer._shared
    assert len(shared_ids) >= len(engine.tokenizer(SYSTEM["content"])["input_ids"])
    again = engine.loglikelihood(chat, settings)  # the shared cache is reused, not recomputed
    assert engine.scorer.forward_passes - passes == 5
    assert _max_delta(old, new) <= TOL
    assert _max_delta(new, again) == 0.0


def test_disabled_prefix_scoring_takes_the_original_path(engine: HFEngine) -> None:
    plain = HFEngine(engine.model, engine.tokenizer, prefix_scoring=False)
    requests = _hand_made()[:2]
    result = plain.loglikelihood(requests, GenerationSettings(batch_size=4))
    assert plain.scorer.forward_passes == 0 and plain.plain_forward_passes > 0
    assert _max_delta(result, engine.loglikelihood(requests, GenerationSettings(batch_size=4))) <= TOL


# -- failures stay with their item ------------------------------------------------------------------


def test_a_failing_item_does_not_sink_the_others(engine: HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = _hand_made()
    expected = engine.loglikelihood_per_option(requests, GenerationSettings(batch_size=8))
    fail_to_render(engine, monkeypatch)
    bad = LoglikelihoodRequest("bad", [{"role": "user", "content": "BOOM"}], ["a", "b"])
    results = engine.loglikelihood(requests[:3] + [bad] + requests[3:], GenerationSettings(batch_size=8))
    assert [r.id for r in results] == [r.id for r in requests[:3]] + ["bad"] + [r.id for r in requests[3:]]
    assert results[3].logprobs == [] and "RuntimeError: cannot render this prompt" in (results[3].error or "")
    assert _max_delta(expected, results[:3] + results[4:]) <= TOL


def test_a_failing_batch_is_scored_item_by_item(engine: HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = _hand_made()
    expected = engine.loglikelihood_per_option(requests, GenerationSettings(batch_size=8))
    original = engine.scorer.score
    sizes: list[int] = []

    def only_single(items, shared_len=0):  # type: ignore[no-untyped-def]
        sizes.append(len(items))
        if len(items) > 1:
            raise MemoryError("batch too large")
        return original(items, shared_len)

    monkeypatch.setattr(engine.scorer, "score", only_single)
    results = engine.loglikelihood(requests, GenerationSettings(batch_size=8))
    assert max(sizes) == len(requests) and sizes.count(1) == len(requests)
    assert _max_delta(expected, results) <= TOL


def test_prefix_failure_falls_back_to_per_option(engine: HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = _hand_made()[:2]
    expected = engine.loglikelihood_per_option(requests, GenerationSettings(batch_size=8))

    def broken(items, shared_len=0):  # type: ignore[no-untyped-def]
        raise TypeError("this model's cache cannot be shared across sequences")

    monkeypatch.setattr(engine.scorer, "score", broken)
    results = engine.loglikelihood(requests, GenerationSettings(batch_size=8))
    assert _max_delta(expected, results) == 0.0


# -- generation: length-sorted batches, request order -------------------------------------------------


def _generation_requests() -> list[GenerationRequest]:
    texts = [
        "x",
        "Hello there",
        "Numbers: 1 2 3",
        "The capital of France is Paris, and the capital of Italy is which city?",
        "Please answer with a single letter.",
        "Is it wrong to take credit for someone else's work?",
    ]
    return [GenerationRequest(f"g{i}", [{"role": "user", "content": t}]) for i, t in enumerate(texts)]


def _unsorted(engine: HFEngine, requests: list[GenerationRequest], settings: GenerationSettings) -> list:
    out = []
    for start in range(0, len(requests), settings.batch_size):
        out.extend(engine._generate_batch(requests[start : start + settings.batch_size], settings))
    return out


def test_sorted_generation_matches_unsorted(engine: HFEngine) -> None:
    requests = _generation_requests()
    settings = GenerationSettings(max_new_tokens=10, batch_size=3)
    lengths = [len(engine.prompts.prompt_ids(r.messages)) for r in requests]
    assert length_sorted_batches(lengths, 3) != [[0, 1, 2], [3, 4, 5]]  # sorting does regroup them
    sorted_results = engine.generate(requests, settings)
    reference = _unsorted(engine, requests, settings)
    assert [r.id for r in sorted_results] == [r.id for r in requests]
    assert [r.text for r in sorted_results] == [r.text for r in reference]
    assert [r.prompt_tokens for r in sorted_results] == lengths


# -- the built-in model on real TruthfulQA items -----------------------------------------------------


@pytest.fixture(scope="module")
def builtin_engine(one_torch_thread: None) -> HFEngine:
    from cluster.models.sources import resolve_model_path

    return HFEngine.from_pretrained(resolve_model_path("smollm2-135m"), dtype="float32", device="cpu")


def _truthfulqa_requests(data_dir: Path, name: str, count: int) -> list[LoglikelihoodRequest]:
    """The requests qtrust sends for the first ``count`` items (as jobs.pipeline.generate renders them)."""
    from trust.benchmarks import get_benchmark

    items = get_benchmark(name).load_all(data_dir)[:count]
    return [LoglikelihoodRequest(item.id, item.messages, list(item.choices or [])) for item in items]


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


@pytest.mark.slow
def test_builtin_truthfulqa_equal_to_per_option(builtin_engine: HFEngine, data_dir: Path) -> None:
    settings = GenerationSettings(batch_size=8)
    for name, count in (("truthfulqa_mc1", 5), ("truthfulqa_mc2", 3)):
        requests = _truthfulqa_requests(data_dir, name, count)
        assert all(len(r.continuations) >= 2 for r in requests)
        old = builtin_engine.loglikelihood_per_option(requests, settings)
        new = builtin_engine.loglikelihood(requests, settings)
        assert _max_delta(old, new) <= TOL, name
        assert [_argmax(r.logprobs) for r in old] == [_argmax(r.logprobs) for r in new]
    # The few-shot preamble is shared by every item and is cached once.
    assert any(len(key) > 100 for key in builtin_engine.scorer._shared)


@pytest.mark.slow
def test_builtin_sorted_generation_matches_unsorted(builtin_engine: HFEngine) -> None:
    requests = _generation_requests()[:4]
    settings = GenerationSettings(max_new_tokens=8, batch_size=2)
    sorted_results = builtin_engine.generate(requests, settings)
    reference = _unsorted(builtin_engine, requests, settings)
    assert [r.id for r in sorted_results] == [r.id for r in requests]
    assert [r.text for r in sorted_results] == [r.text for r in reference]
    assert all(r.text for r in sorted_results)


@pytest.mark.parametrize("min_shared", [1, 8])
def test_items_whose_prefix_is_all_shared(engine: HFEngine, min_shared: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call of one item (its whole prefix is the call-wide prefix) and an item whose prefix is
    a prefix of another's (its own segment is empty) still score exactly."""
    monkeypatch.setattr(engine.scorer, "min_shared", min_shared)
    settings = GenerationSettings(batch_size=4)
    for request in _hand_made():
        assert (
            _max_delta(engine.loglikelihood_per_option([request], settings), engine.loglikelihood([request], settings))
            <= TOL
        )
    pair = [
        LoglikelihoodRequest(
            "short", [{"role": "completion", "content": "The capital of Fra"}], ["nce is Paris.", " Italy"]
        ),
        LoglikelihoodRequest(
            "long", [{"role": "completion", "content": "The capital of France is"}], [" Paris", " Rome."]
        ),
    ]
    ids = [engine.prompts.continuation_sequences(r.messages, r.continuations)[1] for r in pair]
    short_prefix = ids[0][0][0][: item_prefix_len(ids[0])]
    assert ids[1][0][0][: len(short_prefix)] == short_prefix  # "short"'s prefix is all shared
    engine.scorer._shared.clear()
    assert _max_delta(engine.loglikelihood_per_option(pair, settings), engine.loglikelihood(pair, settings)) <= TOL
    assert bool(engine.scorer._shared) == (len(short_prefix) >= min_shared)


# -- generation from a cached shared prefix ------------------------------------------------------------


def _chat_generation_requests() -> list[GenerationRequest]:
    """Prompts that share a long system message (the cached prefix) and differ after it."""
    return [GenerationRequest(r.id, [SYSTEM, *r.messages]) for r in _generation_requests()]


def _with(engine: HFEngine, **settings: object) -> HFEngine:
    return HFEngine(engine.model, engine.tokenizer, settings=HFSettings(**settings))


def test_generation_from_the_shared_prefix_equals_full_prompts(engine: HFEngine) -> None:
    requests = _chat_generation_requests()
    settings = GenerationSettings(max_new_tokens=10, batch_size=3)
    full = _with(engine, prefix_generation=False)
    cached = _with(engine, prefix_generation=True)
    expected = full.generate(requests, settings)
    got = cached.generate(requests, settings)
    assert [r.id for r in got] == [r.id for r in requests]
    assert [r.text for r in got] == [r.text for r in expected]
    assert [r.prompt_tokens for r in got] == [r.prompt_tokens for r in expected]
    # the shared part (chat template + system message) was run once, not once per row
    (shared,) = cached.scorer._shared
    assert len(shared) >= len(engine.tokenizer(SYSTEM["content"])["input_ids"])
    assert cached.generated_prefill_tokens <= full.generated_prefill_tokens - len(requests) * len(shared)
    # ...and reused by the next call without running it again
    passes = cached.scorer.forward_passes
    assert [r.text for r in cached.generate(requests, settings)] == [r.text for r in expected]
    assert cached.scorer.forward_passes == passes


def test_generation_without_a_long_shared_prefix_runs_full_prompts(engine: HFEngine) -> None:
    plain = _with(engine, prefix_generation=True, min_shared_tokens=10_000)
    requests = _chat_generation_requests()[:3]
    plain.generate(requests, GenerationSettings(max_new_tokens=4, batch_size=3))
    assert plain.scorer.forward_passes == 0 and not plain.scorer._shared
    one = _with(engine, prefix_generation=True)
    one.generate(requests[:1], GenerationSettings(max_new_tokens=4))  # a single prompt shares nothing
    assert not one.scorer._shared


def test_a_failing_batch_with_the_shared_prefix_is_retried_without_it(
    engine: HFEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = _with(engine, prefix_generation=True)
    requests = _chat_generation_requests()[:4]
    settings = GenerationSettings(max_new_tokens=6, batch_size=4)
    expected = _with(engine, prefix_generation=False).generate(requests, settings)
    original = cached._generate_batch
    calls: list[bool] = []

    def no_shared(batch, settings, shared=(), prompts=None):  # type: ignore[no-untyped-def]
        calls.append(bool(shared))
        if shared:
            raise RuntimeError("cache trouble")
        return original(batch, settings, prompts=prompts)

    monkeypatch.setattr(cached, "_generate_batch", no_shared)
    got = cached.generate(requests, settings)
    assert calls[0] is True and calls[1:] == [False] * len(requests)
    assert [r.text for r in got] == [r.text for r in expected] and all(r.error is None for r in got)
    # the engine stops trying the shared cache: the next call runs full prompts at once
    calls.clear()
    assert [r.text for r in cached.generate(requests, settings)] == [r.text for r in expected]
    assert calls == [False]


def test_settings_reach_the_engine_and_change_no_key(tmp_path: Path, data_dir: Path) -> None:
    from jobs.plan.build import build_plan
    from jobs.spec.load import parse_spec
    from jobs.spec.schema import SpecError

    def spec(hf: dict | None) -> dict:
        model = {"name": "m", "source": "smollm2-135m", **({"hf": hf} if hf is not None else {})}
        return {
            "name": "s",
            "models": [model],
            "recipes": [{"name": "ref", "method": "none"}],
            "benchmarks": [{"name": "truthfulqa_mc1", "limit": 3}, {"name": "machine_ethics_fewshot", "limit": 3}],
            "storage": {"root": str(tmp_path)},
        }

    default = build_plan(parse_spec(spec(None)), data_dir)
    slow = build_plan(
        parse_spec(spec({"prefix_scoring": False, "prefix_generation": False, "score_token_budget": 4096})), data_dir
    )
    assert default.keys == slow.keys and default.keys
    assert [v.key for v in default.variants.values()] == [v.key for v in slow.variants.values()]
    config = slow.variants["m-ref"].worker_config()
    assert config["hf"] == {
        "prefix_scoring": False,
        "prefix_generation": False,
        "score_token_budget": 4096,
        "min_shared_tokens": 16,
    }
    with pytest.raises(SpecError, match=r"models\[0\]\.hf"):
        parse_spec(spec({"prefix_cache": True}))


def test_worker_config_settings_configure_the_engine(engine: HFEngine) -> None:
    configured = _with(engine)
    configured.configure(HFSettings.model_validate({"prefix_scoring": False, "score_token_budget": 1024}))
    assert configured.prefix_scoring is False and configured.scorer.token_budget == 1024
    assert HFEngine(engine.model, engine.tokenizer, prefix_scoring=False).prefix_scoring is False


@pytest.mark.slow
def test_builtin_generation_from_the_shared_prefix_on_demo_and_fewshot_items(
    builtin_engine: HFEngine, data_dir: Path
) -> None:
    """The demo's items (chat template + default system prompt shared) and few-shot items (32
    demonstrations shared): the same greedy answers with the shared prefix cached as without."""
    from trust.benchmarks import get_benchmark

    cases = (("machine_ethics", 16, 8), ("xstest", 8, 24), ("machine_ethics_fewshot", 8, 8))
    full = _with(builtin_engine, prefix_generation=False)
    cached = _with(builtin_engine, prefix_generation=True)
    for name, count, tokens in cases:
        items = get_benchmark(name).load_all(data_dir)[:count]
        requests = [GenerationRequest(item.id, item.messages) for item in items]
        settings = GenerationSettings(max_new_tokens=tokens, batch_size=8)
        expected = full.generate(requests, settings)
        got = cached.generate(requests, settings)
        assert [r.text for r in got] == [r.text for r in expected], name
        assert all(r.error is None and r.text for r in got), name
    assert any(len(key) > 1000 for key in cached.scorer._shared)  # the few-shot demonstrations
