"""A judge behind any OpenAI-compatible chat endpoint (a vLLM server, Ray Serve LLM, a hosted API).

:class:`EndpointClient` sends chat completions with bounded concurrency, an optional request-rate
limit, a timeout per request, and retries with exponential backoff (and the server's
``Retry-After``) on 429, 5xx, timeouts and dropped connections. Other 4xx answers are not retried:
they mean the request or the credentials are wrong.

The API key is read from the environment variable the spec names (``api_key_env``) when the client
is built; it is sent only in the ``Authorization`` header and never logged, stored or put in an
error message (any text that could carry it is redacted). Credentials a user puts into ``base_url``
(``http://user:password@host/v1``, ``?api_key=...``) are used as given (httpx sends the user-info as
basic auth; ``/chat/completions`` goes before the query) and masked in every message
(:func:`cluster.storage.redact.redact`).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cluster.storage.redact import MASK, is_secret_param, redact

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class EndpointSpec(BaseModel):
    """Where the judge endpoint is and how hard qtrust may push it."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="the API root, e.g. http://127.0.0.1:8000/v1 (…/chat/completions is appended)")
    model: str = Field(description="the model name the endpoint serves")
    api_key_env: str | None = Field(None, description="environment variable holding the API key (never the key itself)")
    concurrency: int = Field(8, ge=1, le=512, description="requests in flight at once")
    requests_per_minute: float | None = Field(None, gt=0, description="request-rate limit (none by default)")
    timeout_s: float = Field(60.0, gt=0, description="seconds per request")
    max_retries: int = Field(5, ge=0, description="retries of one request (429, 5xx, timeouts, dropped connections)")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry, with jitter")
    max_backoff_s: float = Field(30.0, ge=0)
    temperature: float = Field(0.0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        base, mark, query = value.partition("?")
        return base.rstrip("/") + mark + query


class EndpointError(RuntimeError):
    """A request that failed for good (after its retries, or at once for a 4xx other than 429)."""

    def __init__(
        self, message: str, status: int | None = None, retryable: bool = False, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        """Seconds the server asked to wait (``Retry-After``), if it said."""


class _RateLimit:
    """At most ``per_minute`` request starts per minute, shared by the client's threads."""

    def __init__(self, per_minute: float | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class EndpointClient:
    """Chat completions from one endpoint (thread-safe; see the module docstring)."""

    def __init__(self, spec: EndpointSpec, environ: Mapping[str, str] | None = None):
        self.spec = spec
        env = os.environ if environ is None else environ
        self._key: str | None = None
        if spec.api_key_env:
            self._key = env.get(spec.api_key_env) or None
            if self._key is None:
                raise EndpointError(f"the environment variable {spec.api_key_env} (judge api_key_env) is not set")
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(spec.timeout_s),
            limits=httpx.Limits(max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency),
        )
        self._url = chat_url(spec.base_url)
        self._shown_url = redact(self._url)  # what messages name: user-info and secret parameters masked
        self._rate = _RateLimit(spec.requests_per_minute)
        self._pool = ThreadPoolExecutor(max_workers=spec.concurrency, thread_name_prefix="qtrust-endpoint")
        self.requests_sent = 0
        self.retries = 0

    def __repr__(self) -> str:  # never shows the key, nor credentials in the URL
        return f"EndpointClient({redact(self.spec.base_url)!r}, model={self.spec.model!r})"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def __enter__(self) -> EndpointClient:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------------
    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        """The endpoint's answer to one chat, retried as the module docstring says."""
        body = {
            "model": self.spec.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self.spec.temperature,
        }
        attempt = 0
        while True:
            try:
                return self._once(body)
            except EndpointError as err:
                if not err.retryable or attempt >= self.spec.max_retries:
                    raise
                delay = self._delay(attempt, err.retry_after)
                attempt += 1
                self.retries += 1
                log.info("judge endpoint: %s; retry %d in %.1f s", err, attempt, delay)
                time.sleep(delay)

    def complete_many(self, requests: list[tuple[list[dict[str, str]], int]]) -> list[str | EndpointError]:
        """Answers to many chats, ``concurrency`` at a time, in order; a request that fails for good is its error."""

        def one(request: tuple[list[dict[str, str]], int]) -> str | EndpointError:
            try:
                return self.complete(*request)
            except EndpointError as err:
                return err

        return list(self._pool.map(one, requests))

    def _once(self, body: dict[str, Any]) -> str:
        self._rate.wait()
        self.requests_sent += 1
        url, shown = self._url, self._shown_url
        try:
            response = self._http.post(url, json=body)
        except httpx.TimeoutException:
            raise EndpointError(f"no answer from {shown} within {self.spec.timeout_s:g} s", retryable=True) from None
        except httpx.TransportError as err:
            raise EndpointError(
                f"cannot reach {shown}: {self._redact(type(err).__name__ + ': ' + str(err))}", retryable=True
            ) from None
        if response.status_code != 200:
            raise EndpointError(
                f"{shown} answered HTTP {response.status_code}: {self._redact(response.text[:300])}",
                status=response.status_code,
                retryable=response.status_code in RETRY_STATUS,
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EndpointError(
                f"{shown} answered 200 without choices[0].message.content: {self._redact(response.text[:300])}",
                retryable=True,
            ) from None
        return content if isinstance(content, str) else ""

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.spec.max_backoff_s, self.spec.backoff_s * (2**attempt))
        backoff *= 0.5 + random.random() / 2  # jitter: replicas of a sweep do not retry in step
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, self.spec.max_backoff_s))
        return backoff

    def _redact(self, text: str) -> str:
        """``text`` (an error, an answer) without the API key and without the URL's credentials."""
        text = text.replace(self._key, MASK) if self._key else text
        for secret in _url_secrets(self.spec.base_url):
            text = text.replace(secret, MASK)
        return redact(text)


def chat_url(base_url: str) -> str:
    """``<base_url>/chat/completions``, with the path appended before a query string the base URL carries
    (``http://h/v1?api_key=k`` -> ``http://h/v1/chat/completions?api_key=k``)."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/chat/completions"))


def _url_secrets(base_url: str) -> list[str]:
    """The secret values in ``base_url`` (its password or token before ``@``, its secret parameters' values),
    to mask wherever an answer or an error echoes them without the URL around them."""
    parts = urlsplit(base_url)
    userinfo = parts.netloc.rpartition("@")[0]
    found = [userinfo.partition(":")[2] or userinfo] if userinfo else []
    found += [value for name, value in parse_qsl(parts.query) if is_secret_param(name)]
    return [value for value in found if len(value) >= 4]  # a tiny value would mask ordinary words


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
