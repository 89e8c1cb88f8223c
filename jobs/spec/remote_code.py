"""Models whose folder's own Python code runs in the workers (``trust_remote_code: true``).

transformers (and vLLM) import the ``modeling_*.py`` files a model folder or hub repository ships
when ``trust_remote_code`` is set: that code runs with the user's permissions in every worker. It is
never silent: ``qtrust validate`` and ``qtrust run`` print :func:`remote_code_warnings`, the run's
manifest lists :func:`remote_code_models`, and the variant's MLflow runs carry the setting.
"""

from __future__ import annotations

from jobs.spec.schema import SweepSpec


def remote_code_models(spec: SweepSpec) -> list[str]:
    """Names of the models of ``spec`` that set ``trust_remote_code: true``."""
    return [model.name for model in spec.models if model.trust_remote_code]


def remote_code_warnings(spec: SweepSpec) -> list[str]:
    """One line per model that runs its own code, naming the model, its source and what to check."""
    return [
        f"models[{i}] ({model.name}): trust_remote_code is true: every worker runs the Python code shipped with "
        f"{model.source} with your permissions; keep it only for a source you trust"
        for i, model in enumerate(spec.models)
        if model.trust_remote_code
    ]
