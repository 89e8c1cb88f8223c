"""A new, empty MLflow SQLite store without MLflow's migrations each time.

MLflow creates a SQLite store by running every schema migration (about 2.5 s of CPU). Tests that
each need a fresh store get a copy of one store made once per test process, made by MLflow itself
(the same schema and default experiment a new store has). Tests of creating a store (two processes
at once, a store on a server) build theirs as users do.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

_template: Path | None = None


def _template_store() -> Path:
    global _template
    if _template is None or not _template.is_file():
        from mlflow import MlflowClient

        path = Path(tempfile.mkdtemp(prefix="qtrust-mlflow-template-")) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
        _template = path
    return _template


def sqlite_store(path: Path) -> str:
    """The ``sqlite:///`` URI of an MLflow store at ``path``, created empty unless it exists."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_template_store(), path)
    return f"sqlite:///{path}"
