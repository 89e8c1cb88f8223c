"""The endpoint judge client against a small real HTTP server on 127.0.0.1 (scripted answers)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cluster.judges.endpoint import EndpointClient, EndpointError, EndpointSpec

KEY = "sk-test-0123456789abcdef"


class Scripted:
    """What the server answers, request by request (the last entry repeats), and what it saw."""

    def __init__(self, script: list[tuple[int, dict | str, dict]]):
        self.script = script
        self.seen: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay_s = 0.0
        self.lock = threading.Lock()

    def next(self) -> tuple[int, dict | str, dict]:
        with self.lock:
            index = min(len(self.seen) - 1, len(self.script) - 1)
            return self.script[index]


def ok(text: str) -> tuple[int, dict, dict]:
    return 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}, {}


@pytest.fixture
def server() -> Iterator[tuple[str, Scripted]]:
    state = Scripted([ok("safe")])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length))
            with state.lock:
                state.seen.append({"path": self.path, "auth": self.headers.get("authorization"), "body": body})
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                time.sleep(state.delay_s)
                status, payload, headers = state.next()
            finally:
                # Out of flight before the reply is written: once the client has read it, it may
                # send its next request, which must not find this one still counted.
                with state.lock:
                    state.in_flight -= 1
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    httpd.shutdown()
    httpd.server_close()


def spec(url: str, **changes) -> EndpointSpec:
    values = {
        "base_url": url,
        "model": "judge-model",
        "api_key_env": "QTRUST_TEST_JUDGE_KEY",
        "backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "timeout_s": 5.0,
    }
    values.update(changes)
    return EndpointSpec(**values)


def test_429_and_500_are_retried_then_the_answer_comes_back(server, caplog) -> None:
    url, state = server
    state.script = [(429, {"error": "slow down"}, {"Retry-After": "0"}), (500, "boom", {}), ok('{"verdict": "safe"}')]
    caplog.set_level(logging.DEBUG)
    with EndpointClient(spec(url), environ={"QTRUST_TEST_JUDGE_KEY": KEY}) as client:
        answer = client.complete([{"role": "user", "content": "judge this"}], max_tokens=32)
        assert answer == '{"verdict": "safe"}' and client.retries == 2
        assert KEY not in repr(client)
    assert len(state.seen) == 3 and all(s["path"] == "/v1/chat/completions" for s in state.seen)
    assert all(s["auth"] == f"Bearer {KEY}" for s in state.seen)
    body = state.seen[-1]["body"]
    assert body["model"] == "judge-model" and body["max_tokens"] == 32 and body["temperature"] == 0.0
    assert KEY not in caplog.text and "retry" in caplog.text


def test_a_client_error_is_not_retried_and_never_shows_the_key(server) -> None:
    url, state = server
    state.script = [(401, {"error": f"bad key {KEY}"}, {})]
    with EndpointClient(spec(url), environ={"QTRUST_TEST_JUDGE_KEY": KEY}) as client:
        with pytest.raises(EndpointError) as err:
            client.complete([{"role": "user", "content": "x"}], max_tokens=8)
    assert err.value.status == 401 and not err.value.retryable and len(state.seen) == 1
    assert KEY not in str(err.value) and "***" in str(err.value)


def test_retries_are_bounded_and_a_malformed_200_counts_as_a_failure(server) -> None:
    url, state = server
    state.script = [(200, {"unexpected": True}, {})]
    with EndpointClient(spec(url, max_retries=2), environ={"QTRUST_TEST_JUDGE_KEY": KEY}) as client:
        with pytest.raises(EndpointError, match="without choices"):
            client.complete([{"role": "user", "content": "x"}], max_tokens=8)
    assert len(state.seen) == 3  # the first try and 2 retries


def test_a_slow_server_times_out_and_concurrency_is_bounded(server) -> None:
    url, state = server
    state.delay_s = 0.2
    with EndpointClient(spec(url, concurrency=2), environ={"QTRUST_TEST_JUDGE_KEY": KEY}) as client:
        answers = client.complete_many([([{"role": "user", "content": f"q{i}"}], 8) for i in range(6)])
    assert answers == ["safe"] * 6 and state.max_in_flight == 2
    state.seen.clear()
    with EndpointClient(spec(url, timeout_s=0.05, max_retries=1), environ={"QTRUST_TEST_JUDGE_KEY": KEY}) as client:
        (answer,) = client.complete_many([([{"role": "user", "content": "slow"}], 8)])
    assert isinstance(answer, EndpointError) and "within" in str(answer) and len(state.seen) == 2


def test_a_missing_key_variable_is_a_clear_error() -> None:
    with pytest.raises(EndpointError, match="QTRUST_TEST_JUDGE_KEY"):
        EndpointClient(spec("http://127.0.0.1:9/v1"), environ={})
    with pytest.raises(ValueError, match="http"):
        spec("127.0.0.1:8000/v1")


def test_the_rate_limit_spaces_requests(server) -> None:
    url, state = server
    with EndpointClient(
        spec(url, requests_per_minute=600, concurrency=4), environ={"QTRUST_TEST_JUDGE_KEY": KEY}
    ) as client:
        start = time.monotonic()
        client.complete_many([([{"role": "user", "content": f"q{i}"}], 8) for i in range(5)])
        elapsed = time.monotonic() - start
    assert elapsed >= 0.4  # 5 starts, 0.1 s apart
