"""Every sweep file in ``examples/`` validates as ``qtrust validate`` checks it, without downloading anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from jobs.plan.build import build_variants
from jobs.spec.load import load_spec
from tests.support.data_folders import completed_data_folder

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
runner = CliRunner()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates(path: Path, data_dir: Path, tmp_path: Path) -> None:
    # The files `qtrust data fetch` adds (SafetyBench's questions, HotpotQA's paragraphs) stood in for.
    data = completed_data_folder(data_dir, tmp_path)
    result = runner.invoke(app, ["validate", str(path)], env={"COLUMNS": "200", "QTRUST_DATA_DIR": str(data)})
    assert result.exit_code == 0, result.output


def test_methods_example_has_every_method_at_its_widths(data_dir: Path) -> None:
    variants = build_variants(load_spec(REPO / "examples" / "methods.yaml"), data_dir)
    built = {(v.recipe.method, v.recipe.bits) for v in variants.values()}
    expected = {(m, b) for m in ("rtn", "gptq", "awq", "aqlm", "quip_sharp") for b in (2, 3, 4)}
    assert built == expected | {("quik", 4), ("none", None)}
    keys = {v.key for v in variants.values()}
    assert len(keys) == len(variants)  # every recipe is a different variant
