"""A small real OpenAI-compatible chat server on 127.0.0.1 whose answers a test scripts.

``answer(body, n)`` gets each request's JSON body and its 1-based number and returns
``(status, text_or_payload)``: a 200 with a string becomes a chat completion with that content.
Every request (path, Authorization header, body) is kept in ``seen``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[dict[str, Any], int], tuple[int, Any]]


class Stub:
    def __init__(self, answer: Answer, delay_s: float = 0.0):
        self.answer = answer
        self.delay_s = delay_s
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.base_url = ""


@contextmanager
def openai_stub(answer: Answer, delay_s: float = 0.0) -> Iterator[Stub]:
    stub = Stub(answer, delay_s)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            with stub.lock:
                stub.seen.append({"path": self.path, "auth": self.headers.get("authorization"), "body": body})
                number = len(stub.seen)
            time.sleep(stub.delay_s)
            status, payload = stub.answer(body, number)
            if status == 200 and isinstance(payload, str):
                payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": payload}}]}
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stub.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


def judge_reply(body: dict[str, Any]) -> str:
    """A plausible judge: reads which template asked (from its wording) and answers in its format."""
    text = " ".join(m["content"] for m in body["messages"])
    if "verdict" in text and "JSON" in text:
        return '{"reasoning": "The answer declines.", "verdict": "safe"}'
    return "full_refusal"
