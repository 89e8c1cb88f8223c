"""The weights digest: the tensors decide it, not the safetensors layout; one changed weight changes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from cluster.quantization.digest import checkpoint_digest, digest_tensors, largest_difference, model_digest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tensors_of(folder: Path) -> dict[str, torch.Tensor]:
    (path,) = sorted(folder.glob("*.safetensors"))
    return load_file(str(path))


def nudged(tensors: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """A copy with the first element of ``name`` moved to the next representable float."""
    changed = {k: v.clone() for k, v in tensors.items()}
    flat = changed[name].view(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf"), dtype=flat.dtype))
    return changed


def test_the_layout_of_the_files_does_not_change_the_digest_one_weight_does(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    tensors = tensors_of(tiny_model_dir)
    original = checkpoint_digest(tiny_model_dir)
    assert original is not None and len(original) == 64

    # The same tensors in two shards, in reverse order, with other metadata: the same digest.
    names = sorted(tensors, reverse=True)
    resharded = tmp_path / "resharded"
    resharded.mkdir()
    half = len(names) // 2
    save_file({n: tensors[n] for n in names[:half]}, str(resharded / "model-00002-of-00002.safetensors"))
    save_file({n: tensors[n] for n in names[half:]}, str(resharded / "model-00001-of-00002.safetensors"), {"by": "me"})
    assert checkpoint_digest(resharded) == original

    name = "model.layers.1.mlp.down_proj.weight"
    changed = tmp_path / "changed"
    shutil.copytree(tiny_model_dir, changed)
    (changed / "model.safetensors").unlink()
    save_file(nudged(tensors, name), str(changed / "model.safetensors"))
    assert checkpoint_digest(changed) != original

    difference = largest_difference(tiny_model_dir, changed)
    assert (difference.tensor, difference.differing, difference.compared) == (name, 1, len(tensors))
    assert 0 < difference.max_abs < 1e-6
    assert name in difference.describe()
    assert largest_difference(tiny_model_dir, resharded).differing == 0

    # Integer tensors (packed codes) are compared element by element, not as numbers.
    codes = tmp_path / "codes"
    codes.mkdir()
    packed = torch.arange(12, dtype=torch.int32).reshape(3, 4)
    save_file({"w.weight_packed": packed, "w.weight_scale": torch.ones(3)}, str(codes / "a.safetensors"))
    (codes / "b").mkdir()
    save_file(
        {"w.weight_packed": packed.masked_fill(packed == 5, -(2**31)), "w.weight_scale": torch.ones(3)},
        str(codes / "b" / "b.safetensors"),
    )
    packed_difference = largest_difference(codes, codes / "b")
    assert (packed_difference.tensor, packed_difference.codes_differing) == (None, 1)
    assert packed_difference.code_elements == (1, 12)
    assert "1 packed integer tensor(s) differ in 1 of 12 elements" in packed_difference.describe()

    # dtype and shape are part of the digest, not only the bytes.
    weight = tensors[name]
    assert digest_tensors([(name, weight)]) != digest_tensors([(name, weight.reshape(-1))])
    assert digest_tensors([(name, weight)]) != digest_tensors([(name, weight.view(torch.int32))])
    assert checkpoint_digest(tmp_path / "no-such-weights") is None


def test_a_loaded_model_has_the_same_digest_on_every_load(tiny_model_dir: Path) -> None:
    first = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    second = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    assert model_digest(first) == model_digest(second)
    with torch.no_grad():
        second.model.layers[0].self_attn.q_proj.weight[0, 0] += 1e-3
    assert model_digest(first) != model_digest(second)
