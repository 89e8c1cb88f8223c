"""Judge workers that hold no model: the rule judge and the endpoint judge.

Both offer the pool protocol (``load``, ``ping``, ``run_shard``, ``close``) of a variant worker and
answer a shard of judge requests with one result per request: ``text`` (the judge's raw output),
``error`` (the call failed for good), tokens and latency. A model judge is a plain
:class:`cluster.variants.worker.VariantWorker` over the judge model: its requests are the judge prompts.

Request fields (see ``jobs.pipeline.judge``): ``id`` (the judgment key), ``messages`` (the judge
prompt, for template judges) and ``response`` (the judged answer, for the rule judge).
"""

from __future__ import annotations

import os
import time
from typing import Any

from cluster.judges.endpoint import EndpointClient, EndpointError, EndpointSpec
from cluster.storage.redact import redact
from cluster.variants.worker import placement


class _Worker:
    """What both workers share: lazy set-up on first use, liveness, placement."""

    def __init__(self, config: dict[str, Any], *_ignored: Any):
        self.config = config
        self._loads = 0
        self._ready = False

    def _setup(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _ensure(self) -> None:
        if not self._ready:
            self._setup()
            self._ready = True
            self._loads += 1

    def load(self) -> dict[str, Any]:
        start = time.perf_counter()
        self._ensure()
        return {
            "engine": self.describe(),
            "quantization": {},
            "load_seconds": time.perf_counter() - start,
            "loads": self._loads,
            "placement": placement(),
        }

    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "loads": self._loads}

    def describe(self) -> dict[str, str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        return None

    def _answer(self, payload: dict[str, Any], results: list[dict[str, Any]], start: float) -> dict[str, Any]:
        return {
            "results": results,
            "elapsed_s": time.perf_counter() - start,
            "engine": self.describe(),
            "loads": self._loads,
            "placement": placement(),
        }


class RuleJudgeWorker(_Worker):
    """The refusal rules as a judge: the raw output is the label itself (``mode``: three_way or binary)."""

    def _setup(self) -> None:
        from trust.judges.rule import RuleJudge

        self.judge = RuleJudge(self.config.get("mode", "three_way"))

    def describe(self) -> dict[str, str]:
        from trust.judges.rule import RULE_VERSION

        return {"name": "rule", "mode": str(self.config.get("mode", "three_way")), "version": RULE_VERSION}

    def run_shard(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._ensure()
        start = time.perf_counter()
        results = []
        for request in payload["requests"]:
            t = time.perf_counter()
            verdict = self.judge.judge("", request.get("response"))
            results.append(
                {
                    "id": request["id"],
                    "text": verdict.label if verdict.ok else "",
                    "latency_s": time.perf_counter() - t,
                    "error": None,
                }
            )
        return self._answer(payload, results, start)


class Secret:
    """A value that never shows itself: its repr and str are redacted (an API key handed to a worker)."""

    def __init__(self, value: str | None):
        self._value = value

    def reveal(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


class EndpointJudgeWorker(_Worker):
    """Sends each judge prompt to an OpenAI-compatible endpoint (bounded concurrency, retries, rate limit).

    The API key comes from the environment variable the spec names: the worker's own environment
    (a cluster node set up with it) first, else the value the driver read from its environment and
    handed over as a :class:`Secret`. It is never part of the config, a log line, MLflow or the store.
    """

    def __init__(
        self, config: dict[str, Any], cache_dir: Any = None, num_threads: Any = None, secret: Secret | None = None
    ):
        super().__init__(config)
        self._secret = secret

    def _setup(self) -> None:
        self.spec = EndpointSpec.model_validate(self.config["endpoint"])
        environ = dict(os.environ)
        name = self.spec.api_key_env
        if name and not environ.get(name) and self._secret is not None and self._secret.reveal():
            environ[name] = self._secret.reveal()  # type: ignore[assignment]
        self.client = EndpointClient(self.spec, environ=environ)

    def describe(self) -> dict[str, str]:
        spec = EndpointSpec.model_validate(self.config["endpoint"])
        return {
            "name": "endpoint",
            "model": spec.model,
            "base_url": redact(spec.base_url),  # shown in the manifest and on the console
            "concurrency": str(spec.concurrency),
        }

    def run_shard(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._ensure()
        start = time.perf_counter()
        requests = payload["requests"]
        answers = self.client.complete_many([(r["messages"], int(payload["max_new_tokens"])) for r in requests])
        elapsed = time.perf_counter() - start
        results = []
        for request, answer in zip(requests, answers):
            if isinstance(answer, EndpointError):
                results.append(
                    {
                        "id": request["id"],
                        "text": None,
                        "error": f"EndpointError: {answer}",
                        "latency_s": elapsed / max(1, len(requests)),
                    }
                )
            else:
                results.append(
                    {"id": request["id"], "text": answer, "error": None, "latency_s": elapsed / max(1, len(requests))}
                )
        failed = [r for r in results if r["error"]]
        if failed and len(failed) == len(results):
            # Nothing came back: the endpoint is down or refusing us; the scheduler retries the shard.
            raise EndpointError(f"every request of the shard failed; first: {failed[0]['error']}")
        return self._answer(payload, results, start)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
