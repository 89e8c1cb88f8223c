"""A digest of a variant's weights that depends on the tensors only, and where two sets of weights differ.

The digest is a sha256 over every tensor in name order, each as its name, dtype, shape and raw
bytes, so it does not depend on how the tensors were laid out in safetensors files (sharding,
ordering, metadata). Two machines that built the same variant key agree on the digest exactly
when they produced bit-identical weights.

* :func:`checkpoint_digest`: the tensors of a checkpoint folder's ``*.safetensors`` files (what a
  cached variant's build wrote).
* :func:`model_digest`: the tensors a loaded model holds in memory (what a replica computes with;
  for load-time methods such as bnb and hqq, the quantized state).
* :func:`largest_difference`: which tensors of two checkpoint folders differ, and by how much.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Files of a checkpoint folder whose tensors make up the digest.
WEIGHT_FILES = "*.safetensors"


def _tensor_bytes(tensor: Any) -> memoryview:
    """The raw bytes of a tensor (any dtype, any device), in row-major order."""
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def digest_tensors(tensors: Iterable[tuple[str, Any]]) -> str:
    """Hex sha256 over ``(name, tensor)`` pairs in name order: name, dtype, shape, then the bytes.

    Raises:
        ValueError: a name occurs twice.
    """
    ordered = sorted(tensors, key=lambda item: item[0])
    names = [name for name, _ in ordered]
    if len(set(names)) != len(names):
        raise ValueError("a tensor name occurs twice in the weights being digested")
    digest = hashlib.sha256()
    for name, tensor in ordered:
        header = f"{name}\x1f{str(tensor.dtype).removeprefix('torch.')}\x1f{tuple(tensor.shape)}\x1e"
        digest.update(header.encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (sorted; empty when it has none)."""
    return sorted(Path(folder).glob(WEIGHT_FILES))


def iter_checkpoint(folder: Path) -> Iterator[tuple[str, Any]]:
    """Every tensor of the folder's safetensors files, one at a time (name, tensor on CPU)."""
    from safetensors import safe_open

    for path in weight_files(folder):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def checkpoint_digest(folder: Path) -> str | None:
    """The digest of the tensors in ``folder``'s safetensors files; None when it has none."""
    if not weight_files(folder):
        return None
    return digest_tensors(iter_checkpoint(folder))


def model_digest(model: Any) -> str:
    """The digest of the tensors a loaded model holds (its ``state_dict``; entries that are not tensors are skipped)."""
    import torch

    state = model.state_dict()
    return digest_tensors((name, value) for name, value in state.items() if isinstance(value, torch.Tensor))


@dataclass(frozen=True)
class WeightDifference:
    """Where two checkpoints differ: the float tensor with the largest absolute difference, and counts.

    Integer tensors (packed codes of compressed-tensors checkpoints) are compared element by
    element instead: a difference between two packed words says nothing about the weights.
    """

    tensor: str | None
    """Name of the float tensor with the largest absolute difference (None: no float tensor differs in value)."""
    max_abs: float
    """Its largest absolute elementwise difference (as float64)."""
    differing: int
    """How many tensors differ (in value, dtype or shape)."""
    compared: int
    """How many tensor names the two have in common."""
    only_in_one: tuple[str, ...] = ()
    """Tensor names present in one folder but not the other."""
    codes_differing: int = 0
    """Integer tensors that differ, and in how many elements of how many in all."""
    code_elements: tuple[int, int] = (0, 0)

    def describe(self) -> str:
        """One line for the console."""
        parts = [f"{self.differing} of {self.compared} tensors differ"]
        if self.tensor is not None:
            parts.append(f"largest difference {self.max_abs:.3g} in {self.tensor}")
        if self.codes_differing:
            changed, total = self.code_elements
            parts.append(f"{self.codes_differing} packed integer tensor(s) differ in {changed} of {total} elements")
        if self.only_in_one:
            shown = ", ".join(self.only_in_one[:3]) + (" ..." if len(self.only_in_one) > 3 else "")
            parts.append(f"{len(self.only_in_one)} tensor(s) in only one of them ({shown})")
        return "; ".join(parts)


def largest_difference(first: Path, second: Path) -> WeightDifference:
    """Compare the tensors of two checkpoint folders by name."""
    from safetensors import safe_open

    def index(folder: Path) -> dict[str, Path]:
        where: dict[str, Path] = {}
        for path in weight_files(folder):
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():
                    where[name] = path
        return where

    def load(path: Path, name: str) -> Any:
        with safe_open(str(path), framework="pt") as handle:
            return handle.get_tensor(name)

    left, right = index(first), index(second)
    common = sorted(set(left) & set(right))
    differing, worst_name, worst = 0, None, -1.0
    codes, code_changed, code_total = 0, 0, 0
    for name in common:
        a, b = load(left[name], name), load(right[name], name)
        if a.dtype != b.dtype or a.shape != b.shape:
            differing += 1
            continue
        if not (a.is_floating_point() or a.is_complex()):
            changed = int((a != b).sum().item())
            if changed:
                differing, codes = differing + 1, codes + 1
                code_changed, code_total = code_changed + changed, code_total + a.numel()
            continue
        delta = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
        if delta > 0 or not _same_bytes(a, b):  # NaN payloads or signed zeros differ in bytes only
            differing += 1
            if delta > worst:
                worst_name, worst = name, float(delta)
    only = tuple(sorted(set(left) ^ set(right)))
    return WeightDifference(
        worst_name, max(worst, 0.0), differing, len(common), only, codes, (code_changed, code_total)
    )


def _same_bytes(a: Any, b: Any) -> bool:
    return bytes(_tensor_bytes(a)) == bytes(_tensor_bytes(b))
