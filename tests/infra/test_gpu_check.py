"""``bench/gpu_check.py --device cpu``: the GPU machine's prepared check, run whole on the CPU.

Every row must pass here (the packages are installed): prefix-cached scoring and generation equal
the full path, GPTQ/AWQ build with llm-compressor and load, bitsandbytes 4-bit loads, and the aqlm
kernels equal the dequantized matmul. On a lent GPU the same script runs with ``--device cuda``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHECKS = ["prefix scoring", "prefix generation", "gptq w4", "awq w4", "bnb nf4", "aqlm 1x16", "aqlm 2x8", "aqlm 1x8"]


def test_gpu_check_passes_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.read_text().splitlines()[4:]}
    assert rows == dict.fromkeys(CHECKS, "ok"), out.read_text()
    assert "max |Δ log-prob|" in out.read_text() and "greedy tokens differ" in out.read_text()


def test_gpu_check_refuses_cuda_without_a_gpu() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible, whatever the machine has
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 2 and "--device cpu" in done.stderr, done.stderr
