"""Fixtures shared by the tests of ``jobs/``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    """A local model folder that a sweep's ``source:`` accepts (an empty ``config.json``; never loaded)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder
