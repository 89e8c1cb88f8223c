"""The test suite's own layout: tests mirror the code, and the serial list names real modules."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import LONG_MODULES, REPO, SERIAL_MODULES

AREAS = {"trust", "cluster", "jobs", "infra"}


def test_every_test_module_lives_in_the_folder_of_what_it_tests() -> None:
    stray = [
        p.relative_to(REPO).as_posix()
        for p in (REPO / "tests").rglob("test_*.py")
        if p.parent != REPO / "tests" and p.relative_to(REPO / "tests").parts[0] not in AREAS
    ]
    loose = [p.name for p in (REPO / "tests").glob("test_*.py") if p.name != Path(__file__).name]
    assert not stray and not loose, f"move these under tests/{{{','.join(sorted(AREAS))}}}/: {stray + loose}"


def test_the_serial_modules_exist() -> None:
    missing = sorted(m for m in SERIAL_MODULES if not (REPO / m).is_file())
    assert not missing, f"tests/conftest.py SERIAL_MODULES names modules that do not exist: {missing}"


def test_the_long_modules_exist_and_are_not_serial() -> None:
    missing = sorted(m for m in LONG_MODULES if not (REPO / m).is_file())
    assert not missing, f"tests/conftest.py LONG_MODULES names modules that do not exist: {missing}"
    assert not set(LONG_MODULES) & set(SERIAL_MODULES)
