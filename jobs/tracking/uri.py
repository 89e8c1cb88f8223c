"""Where tracking goes: the URI, how to open its UI, and text about it that is safe to print.

Secrets are masked by the one redactor, :func:`cluster.storage.redact.redact` (re-exported here as
:func:`redact`, with :func:`is_redacted` and :data:`MASK`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cluster.storage.redact import MASK, is_redacted, redact, strip_userinfo

#: Re-exported: callers across ``jobs`` import the one redactor (:mod:`cluster.storage.redact`) from here.
__all__ = [
    "LOCAL_UI",
    "MASK",
    "TrackingUriError",
    "is_redacted",
    "is_server_uri",
    "redact",
    "resolve_tracking_uri",
    "run_url",
    "sqlite_path",
    "stored_tracking_uri",
    "ui_base_url",
    "ui_command",
]

LOCAL_UI = "http://127.0.0.1:5000"


class TrackingUriError(ValueError):
    """The tracking URI to use is unknown: the stored one is redacted and no other was given."""


def resolve_tracking_uri(cli_uri: str | None, spec_uri: str | None) -> str:
    """First found wins: ``--tracking-uri``, ``MLFLOW_TRACKING_URI``, the spec, MLflow's default local store.

    Raises :class:`TrackingUriError` when the spec's URI is the redacted copy a stored sweep keeps
    (``http://user:***@host``) and neither of the others is set: its secret was never stored.
    """
    for candidate in (cli_uri, os.environ.get("MLFLOW_TRACKING_URI")):
        if candidate:
            return candidate
    if spec_uri:
        if is_redacted(spec_uri):
            raise TrackingUriError(
                f"the sweep's tracking URI is stored without its credentials ({spec_uri}); give the full URI with "
                "--tracking-uri or in the environment variable MLFLOW_TRACKING_URI"
            )
        return spec_uri
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def stored_tracking_uri(stored: str, cli_uri: str | None) -> str:
    """The URI to reach the store a manifest names (``stored``, kept redacted): ``--tracking-uri`` wins,
    then ``MLFLOW_TRACKING_URI`` when ``stored`` lacks its credentials, else ``stored``.

    Raises :class:`TrackingUriError` when ``stored`` is redacted and no other URI was given.
    """
    if cli_uri:
        return cli_uri
    if not is_redacted(stored):
        return stored
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    raise TrackingUriError(
        f"the manifest keeps the tracking URI without its credentials ({stored}); give the full URI with "
        "--tracking-uri or in the environment variable MLFLOW_TRACKING_URI"
    )


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
    return f"{program} ui --backend-store-uri {redact(uri)} --port 5000"


def ui_base_url(uri: str) -> str:
    """Base URL of the UI that shows this store: the server itself with no credentials and no query
    (the browser asks for them), or ``mlflow ui``'s default address."""
    if not is_server_uri(uri):
        return LOCAL_UI
    return strip_userinfo(uri).split("?", 1)[0].split("#", 1)[0].rstrip("/")


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """UI address of one run."""
    return f"{ui_base_url(uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).resolve()
