"""A worker process skips transformers' optional imports it does not need (hqq, scikit-learn)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from cluster.engines.startup import prepare_worker_process, skip_optional_imports

PROBE = textwrap.dedent(
    """
    import sys
    from cluster.engines.startup import skip_optional_imports
    skipped = skip_optional_imports(keep={keep!r})
    import transformers.cache_utils, transformers.generation.candidate_generator
    from transformers import AutoModelForCausalLM
    print(sorted(skipped), 'hqq' in sys.modules, 'sklearn' in sys.modules)
    """
)


def _run(keep: set[str]) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE.format(keep=keep)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_fresh_process_skips_hqq_and_sklearn_unless_kept() -> None:
    assert _run(set()) == "['hqq', 'sklearn'] False False"
    assert _run({"hqq"}) == "['sklearn'] True False"


def test_nothing_changes_outside_a_ray_worker_or_after_transformers_loaded_them() -> None:
    import transformers.cache_utils
    import transformers.generation.candidate_generator  # noqa: F401

    assert prepare_worker_process("rtn") == []  # not a Ray worker
    assert skip_optional_imports() == []  # too late: left as it is
    from transformers.utils import is_hqq_available

    assert is_hqq_available() is True
