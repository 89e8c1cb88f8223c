"""What every judge kind offers (:class:`JudgeKind`), and what a kind reads of a judge (:class:`JudgeSettings`).

A kind is one class: its class attributes say what it is (the worker that serves it, whether it reads
a judge template, its default CPUs, which spec fields it takes) and its methods say how it behaves
(its identity, its requests, how its verdicts are read, its worker config, its spec checks and its
tracking parameters). The methods here are those of a **template judge** (it reads a judge template:
the model and endpoint kinds); a kind that reads no template (the rule kind) overrides them.

Nothing here imports a worker, a model or Ray: the worker class is named ``module:Class`` and imported
only by :meth:`JudgeKind.worker_class`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

from trust.judges.templates import JudgeTemplate
from trust.judges.verdicts import Verdict, failed
from trust.types import Item

#: A spec problem: (the judge's field, what to change). The spec prefixes ``judges[i].``.
Problem = tuple[str, str]


class JudgeSettings(Protocol):
    """The settings of one judge a kind reads, read-only (``jobs.spec.schema.JudgeSpec`` has them all)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def mode(self) -> str:
        """rule: ``three_way`` or ``binary``."""

    @property
    def template(self) -> str | Mapping[str, str] | None:
        """A template (built-in name or file), benchmark -> template, or none."""

    @property
    def model(self) -> str | None: ...

    @property
    def revision(self) -> str | None: ...

    @property
    def dtype(self) -> str: ...

    @property
    def engine(self) -> str: ...

    @property
    def decoding(self) -> str:
        """``generate`` or ``choose``."""

    @property
    def endpoint(self) -> Any:
        """A :class:`cluster.judges.endpoint.EndpointSpec`, or None."""

    @property
    def max_new_tokens(self) -> int | None: ...

    @property
    def batch_size(self) -> int: ...


class JudgeKind:
    """One kind of judge (see the module docstring; subclasses set the class attributes)."""

    name: ClassVar[str]
    """What a sweep's ``kind:`` names."""
    worker: ClassVar[str]
    """``module:Class`` of the actor class that serves the kind (imported lazily)."""
    description: ClassVar[str]
    needs_template: ClassVar[bool] = True
    """Whether the judge reads a judge template (prompts and output format)."""
    default_num_cpus: ClassVar[float] = 0.05
    takes_endpoint: ClassVar[bool] = False
    """Whether the judge takes the spec's ``endpoint`` field."""
    scores_labels: ClassVar[bool] = False
    """Whether the judge's workers score continuations (``decoding: choose``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # -- the worker ----------------------------------------------------------------------------
    def worker_class(self) -> type:
        """The actor class of this kind (imported now)."""
        module, _, attr = self.worker.partition(":")
        return getattr(importlib.import_module(module), attr)

    def worker_config(self, judge: JudgeSettings, num_gpus: float) -> dict[str, Any]:
        """What the judge's workers are built from (plain data; never a secret)."""
        raise NotImplementedError

    def worker_args(self, judge: JudgeSettings) -> tuple[Any, ...]:
        """Extra constructor arguments of a worker after ``(config, cache_dir, num_threads)`` (e.g. a secret)."""
        return ()

    def in_process(self, judge: JudgeSettings) -> Callable[[str | None], Verdict] | None:
        """A verdict function over one answer when the kind needs no worker at all (no model, no network).

        ``qtrust judge-eval`` then judges in its own process without loading a worker; None: use the worker.
        """
        return None

    # -- identity and requests -----------------------------------------------------------------
    def required_template(self, template: JudgeTemplate | None) -> JudgeTemplate:
        """``template``, which a template judge must have been planned with."""
        if template is None:
            raise ValueError(f"the {self.name} judge reads a judge template, and none was chosen for this benchmark")
        return template

    def decoding(self, judge: JudgeSettings, max_new_tokens: int) -> str:
        """How the judge decodes, as it appears in its identity."""
        return "choose" if judge.decoding == "choose" else f"greedy,max{max_new_tokens}"

    def identity(self, judge: JudgeSettings, template: JudgeTemplate | None, max_new_tokens: int) -> str:
        """What makes two judgments comparable (hashed into every judgment key: keep it byte-stable)."""
        raise NotImplementedError

    def labels(self, judge: JudgeSettings, template: JudgeTemplate | None) -> list[str]:
        """The judge's own label vocabulary."""
        return list(self.required_template(template).labels)

    def request(
        self, judge: JudgeSettings, template: JudgeTemplate | None, item: Item, output: str | None, data_dir: Path
    ) -> dict[str, Any]:
        """What the judge reads about one answer (hashed into the judgment key): the rendered judge prompt."""
        template = self.required_template(template)
        prompt = next((m["content"] for m in reversed(item.messages) if m.get("role") == "user"), "")
        messages = template.messages(prompt, output or "", item.attributes, data_dir)
        if judge.decoding == "choose":
            return {"messages": messages, "continuations": list(template.labels)}
        return {"messages": messages}

    # -- verdicts ------------------------------------------------------------------------------
    def read(
        self, judge: JudgeSettings, template: JudgeTemplate | None, result: dict[str, Any]
    ) -> tuple[str | None, Verdict]:
        """The raw text kept and the verdict of one worker result (a chosen label, or text to parse)."""
        if judge.decoding == "choose":
            labels = list(self.required_template(template).labels)
            logprobs = list(result.get("logprobs") or [])
            if len(logprobs) != len(labels):
                return None, failed("", f"expected {len(labels)} label scores, got {len(logprobs)}")
            best = max(range(len(labels)), key=lambda i: logprobs[i])
            raw = json.dumps({"choice": labels[best], "logprobs": dict(zip(labels, logprobs))})
            return raw, Verdict(label=labels[best], raw=raw)
        text: str | None = result.get("text")
        return text, self.parse(judge, template, text)

    def parse(self, judge: JudgeSettings, template: JudgeTemplate | None, raw: str | None) -> Verdict:
        """The verdict in a judge's raw output (never raises)."""
        try:
            return self.required_template(template).parse(raw)
        except Exception as err:
            return failed(raw or "", f"{type(err).__name__}: {err}")

    # -- spec checks ---------------------------------------------------------------------------
    def problems(self, judge: JudgeSettings) -> list[Problem]:
        """Why ``judge`` cannot run as this kind (no model load, no network): the kind's own checks, then the
        fields it does not take."""
        out = list(self.own_problems(judge))
        if not self.takes_endpoint and judge.endpoint is not None:
            out.append(("endpoint", "only endpoint judges take 'endpoint'; remove it or set kind: endpoint"))
        if judge.decoding == "choose" and not self.scores_labels:
            out.append(
                (
                    "decoding",
                    "'choose' scores labels by log-likelihood, which only model judges offer; use decoding: generate",
                )
            )
        if not self.needs_template and judge.template is not None:
            out.append(("template", f"the {self.name} judge reads no template; remove it"))
        return out

    def own_problems(self, judge: JudgeSettings) -> list[Problem]:
        """The fields this kind needs (e.g. a model, an endpoint)."""
        return []

    # -- tracking ------------------------------------------------------------------------------
    def tracking_params(self, judge: JudgeSettings) -> dict[str, str]:
        """The kind's own parameters of a sweep's judge (after ``kind``; the model and endpoint follow)."""
        return {}

    def eval_params(self, judge: JudgeSettings, template: JudgeTemplate | None, max_new_tokens: int) -> dict[str, str]:
        """The kind's own parameters of a ``qtrust judge-eval`` run (prefixed ``judge.`` there)."""
        template = self.required_template(template)
        return {"template": template.name, "decoding": judge.decoding, "max_new_tokens": str(max_new_tokens)}
