"""The ``endpoint`` judge kind: any OpenAI-compatible chat endpoint, reading a judge template.

Its worker is :class:`cluster.judges.workers.EndpointJudgeWorker`; the endpoint's API key stays in
the environment (the spec names its variable only) and is handed to workers as a redacted
:class:`cluster.judges.workers.Secret`.
"""

from __future__ import annotations

import os
from typing import Any

from cluster.judges.kind_base import JudgeKind, JudgeSettings, Problem
from trust.judges.templates import JudgeTemplate


class EndpointKind(JudgeKind):
    """A judge behind an OpenAI-compatible endpoint (``endpoint``: base_url, model, api_key_env, limits)."""

    name = "endpoint"
    worker = "cluster.judges.workers:EndpointJudgeWorker"
    description = "any OpenAI-compatible chat endpoint (vLLM server, Ray Serve LLM, a hosted API)"
    needs_template = True
    default_num_cpus = 0.05
    takes_endpoint = True

    def worker_config(self, judge: JudgeSettings, num_gpus: float) -> dict[str, Any]:
        assert judge.endpoint is not None
        return {"kind": "endpoint", "endpoint": judge.endpoint.model_dump(mode="json")}

    def worker_args(self, judge: JudgeSettings) -> tuple[Any, ...]:
        endpoint = judge.endpoint
        if endpoint is None or not endpoint.api_key_env:
            return ()
        from cluster.judges.workers import Secret

        return (Secret(os.environ.get(endpoint.api_key_env)),)

    def identity(self, judge: JudgeSettings, template: JudgeTemplate | None, max_new_tokens: int) -> str:
        assert judge.endpoint is not None
        template = self.required_template(template)
        decoding = self.decoding(judge, max_new_tokens)
        return f"endpoint:{judge.endpoint.model}|t={judge.endpoint.temperature:g}|{decoding}|{template.identity}"

    def own_problems(self, judge: JudgeSettings) -> list[Problem]:
        if judge.endpoint is None:
            return [("endpoint", "an endpoint judge needs 'endpoint' (base_url, model, api_key_env)")]
        return []
