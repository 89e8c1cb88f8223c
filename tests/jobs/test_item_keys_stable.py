"""Every built-in benchmark's item keys are the ones computed before the code was regrouped by step.

``data/item_keys_before_regrouping.json`` was written by the code as it stood before the regrouping
(commit 6d04ac1): per variant × benchmark, the number of items and the sha256 of their item keys
in plan order, for every item of every built-in benchmark (no limit). A change that alters any key
(a rendered prompt, a recipe field, the key schema) fails here, because it would make every stored
answer of every existing sweep unreachable.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from jobs.plan.build import build_plan
from jobs.spec.load import parse_spec
from trust.benchmarks import BENCHMARKS

BEFORE = Path(__file__).parent / "data" / "item_keys_before_regrouping.json"


def _digests(data_dir: Path, storage: Path, names: list[str]) -> dict[str, dict[str, object]]:
    spec = parse_spec(
        {
            "name": "keys",
            "models": [{"name": "smollm2", "source": "smollm2-135m", "dtype": "float32", "engine": "hf"}],
            "recipes": [
                {"name": "ref", "method": "none"},
                {"name": "w4", "method": "rtn", "bits": 4, "group_size": 64},
                {
                    "name": "gptq-w4",
                    "method": "gptq",
                    "bits": 4,
                    "group_size": 64,
                    "calibration": {"samples": 8, "seq_len": 128},
                },
            ],
            "benchmarks": [{"name": name} for name in names],
            "storage": {"root": str(storage)},
        }
    )
    plan = build_plan(spec, data_dir)
    return {
        f"{variant}/{bench}": {"items": len(keys), "sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest()}
        for (variant, bench), keys in sorted(plan.keys.items())
    }


def test_every_built_in_benchmark_keeps_its_item_keys(data_dir: Path, tmp_path: Path) -> None:
    before = json.loads(BEFORE.read_text())
    # The benchmarks that existed then (those added since have no earlier keys to keep).
    names = sorted({key.split("/", 1)[1] for key in before})
    assert set(names) < set(BENCHMARKS)
    now = _digests(data_dir, tmp_path, names)
    assert set(now) == set(before), sorted(set(now) ^ set(before))
    changed = {name: (before[name], now[name]) for name in before if before[name] != now[name]}
    assert not changed, changed
    assert sum(entry["items"] for entry in now.values()) > 10_000
