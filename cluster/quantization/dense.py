"""Plain dense checkpoints from models that carry quantization bookkeeping."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def fresh_dense_model(model: PreTrainedModel, tensors: dict[str, torch.Tensor]) -> PreTrainedModel:
    """A fresh model of ``model``'s architecture (on CPU, no ``quantization_config``) filled from ``tensors``.

    Only the tensors the fresh model has are copied, so quantization extras (``weight_scale``,
    ``weight_zero_point``, ...) are left behind; tied weights stay tied.

    Raises:
        RuntimeError: ``tensors`` lacks a tensor the fresh model needs.
    """
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    target = fresh.state_dict()
    missing = sorted(set(target) - set(tensors))
    if missing:
        raise RuntimeError(f"the quantized model lacks {len(missing)} tensors of a fresh copy, e.g. {missing[:3]}")
    with torch.no_grad():
        for key, tensor in target.items():
            tensor.copy_(tensors[key].to(device=tensor.device, dtype=tensor.dtype))
    fresh.tie_weights()
    if getattr(model, "generation_config", None) is not None:
        fresh.generation_config = copy.deepcopy(model.generation_config)
    fresh.eval()
    return fresh
