"""Where tracking goes: the URI, how to open its UI, and text about it that is safe to print."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

LOCAL_UI = "http://127.0.0.1:5000"
_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def resolve_tracking_uri(cli_uri: str | None, spec_uri: str | None) -> str:
    """First found wins: ``--tracking-uri``, ``MLFLOW_TRACKING_URI``, the spec, MLflow's default local store."""
    for candidate in (cli_uri, os.environ.get("MLFLOW_TRACKING_URI"), spec_uri):
        if candidate:
            return candidate
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def is_server_uri(uri: str) -> bool:
    """True for a tracking server reached over HTTP(S)."""
    return uri.startswith(("http://", "https://"))


def ui_command(uri: str) -> str:
    """The command that serves the MLflow UI over this tracking store ("" for a tracking server)."""
    if is_server_uri(uri) or uri.startswith("databricks"):
        return ""
    mlflow = Path(sys.executable).parent / "mlflow"
    program = "mlflow"
    if mlflow.is_file():
        try:
            program = str(mlflow.relative_to(Path.cwd()))
        except ValueError:
            program = str(mlflow)
    return f"{program} ui --backend-store-uri {uri} --port 5000"


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URL in it replaced by ``***@``."""
    return _CREDENTIALS.sub(r"\1***@", text)


def ui_base_url(uri: str) -> str:
    """Base URL of the UI that shows this store: the server itself, or ``mlflow ui``'s default address."""
    return redact(uri).rstrip("/") if is_server_uri(uri) else LOCAL_UI


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """UI address of one run."""
    return f"{ui_base_url(uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).resolve()
