"""Secrets in a sweep spec: masked in the copy the store keeps, asked for again when a stored spec runs.

A user may put credentials into two URIs of a sweep: the tracking URI (``tracking.uri``) and a judge
endpoint's ``base_url`` (``http://user:password@host/v1``, ``...?api_key=...``). Storage locations refuse
them (:func:`cluster.storage.uri.location_problem`). The store keeps the spec with both masked by the one
redactor (:func:`redacted_spec`, ``http://user:***@host``); the real values stay in the driver's memory.

A stored spec run again (``qtrust resume``, ``qtrust judge``) holds the masked values, which must never be
used as they are: :func:`masked_problems` names each one a run would need with where to give the real
value (``--tracking-uri`` is handled by :func:`jobs.tracking.uri.resolve_tracking_uri`; a judge's URL by
``--judge-url NAME=URL``, applied with :func:`with_judge_urls`). Item, judgment and variant keys never
depend on these values (an endpoint judge's identity is its model, decoding and template), so a resumed
sweep with the real URL reuses everything stored.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from cluster.storage.redact import is_redacted, redact
from jobs.spec.schema import SpecError, SweepSpec

#: The option that gives a judge's real endpoint URL to a command that runs a stored spec.
JUDGE_URL_OPTION = "--judge-url"
_JUDGE_URL_FIELD = re.compile(r"judges\[(\d+)\]\.endpoint\.base_url")


def redacted_spec(spec: SweepSpec) -> SweepSpec:
    """``spec`` as the store keeps it: the tracking URI and every judge endpoint's ``base_url`` with their
    credentials masked (``spec`` itself is unchanged; the real values stay in memory)."""
    update: dict[str, Any] = {}
    uri = spec.tracking.uri
    if uri and redact(uri) != uri:
        update["tracking"] = spec.tracking.model_copy(update={"uri": redact(uri)})
    judges = [_redacted_judge(judge) for judge in spec.judges]
    if any(new is not old for new, old in zip(judges, spec.judges)):
        update["judges"] = judges
    return spec.model_copy(update=update) if update else spec


def _redacted_judge(judge: Any) -> Any:
    endpoint = judge.endpoint
    if endpoint is None or redact(endpoint.base_url) == endpoint.base_url:
        return judge
    return judge.model_copy(update={"endpoint": endpoint.model_copy(update={"base_url": redact(endpoint.base_url)})})


def masked_fields(spec: SweepSpec) -> list[tuple[str, str]]:
    """``(field path, value)`` of every masked value in ``spec`` (``judges[0].endpoint.base_url``)."""
    found: list[tuple[str, str]] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str) and is_redacted(value):
            found.append((path, value))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(spec.model_dump(mode="json"), "")
    return found


def masked_problems(spec: SweepSpec) -> list[str]:
    """One line per masked value a run of ``spec`` would use, naming the field and how to give the real value.

    ``tracking.uri`` is left to :func:`jobs.tracking.uri.resolve_tracking_uri` (``--tracking-uri`` or
    ``MLFLOW_TRACKING_URI`` replace it); a judge no benchmark uses is not needed and not named.
    """
    used = {name for bench in spec.benchmarks for name in bench.judges}
    problems = []
    for path, value in masked_fields(spec):
        if path == "tracking.uri":
            continue
        judge = _JUDGE_URL_FIELD.fullmatch(path)
        if judge is not None:
            name = spec.judges[int(judge.group(1))].name
            if name in used:
                problems.append(
                    f"{path}: {value} is a masked copy (the store never keeps credentials); give the real URL "
                    f"with {JUDGE_URL_OPTION} {name}=URL, or run the original sweep file with 'qtrust run'"
                )
            continue
        problems.append(
            f"{path}: {value} is a masked copy (the store never keeps credentials); "
            "run the original sweep file with 'qtrust run'"
        )
    return problems


def with_judge_urls(spec: SweepSpec, pairs: list[str], source: str = JUDGE_URL_OPTION) -> SweepSpec:
    """``spec`` with the endpoint ``base_url`` of the judges ``pairs`` name (``NAME=URL`` each) replaced.

    Raises :class:`SpecError` (one line per problem, naming ``source``) for a pair without ``=``, a judge the
    spec does not have, a judge without an endpoint, or a URL an endpoint refuses.
    """
    if not pairs:
        return spec
    by_name = {judge.name: index for index, judge in enumerate(spec.judges)}
    judges = list(spec.judges)
    problems = []
    for pair in pairs:
        name, sep, url = pair.partition("=")
        shown = redact(pair)
        if not sep or not name or not url:
            problems.append(f"{shown}: give NAME=URL, e.g. {JUDGE_URL_OPTION} api=https://user:password@host/v1")
            continue
        index = by_name.get(name)
        if index is None or judges[index].endpoint is None:
            endpoints = sorted(j.name for j in judges if j.endpoint is not None)
            problems.append(
                f"{shown}: the sweep has no endpoint judge '{name}'; its endpoint judges: {', '.join(endpoints) or 'none'}"
            )
            continue
        endpoint = judges[index].endpoint
        assert endpoint is not None
        try:
            real = type(endpoint).model_validate({**endpoint.model_dump(), "base_url": url})
        except ValidationError as err:
            problems.append(f"{shown}: {err.errors()[0]['msg']}")
            continue
        judges[index] = judges[index].model_copy(update={"endpoint": real})
    if problems:
        raise SpecError(source, problems)
    return spec.model_copy(update={"judges": judges})


__all__ = ["JUDGE_URL_OPTION", "masked_fields", "masked_problems", "redacted_spec", "with_judge_urls"]
