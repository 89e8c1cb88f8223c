"""Randomized Hadamard transforms (RHT): the incoherence processing of QuIP#.

A transform of width ``n`` is the orthogonal matrix ``T = K · diag(s)``: random signs ``s ∈ {±1}^n``
(drawn from a seed) followed by a fixed orthogonal ``K`` whose entries are all small, so that ``T``
spreads every weight and every Hessian direction evenly over all coordinates (Tseng et al. 2024,
section 3). ``K`` is a Kronecker product ``K = H_p / √p ⊗ B`` with ``n = p · c``:

* ``H_p``: the Sylvester Hadamard matrix of order ``p = 2^k`` (``scipy.linalg.hadamard``), applied
  with the fast Walsh–Hadamard butterfly in ``O(n log n)`` per vector;
* ``B``: a ``c × c`` orthogonal factor for the rest of the width,

  - ``c = 1`` where ``n`` is a power of two;
  - a normalised Paley Hadamard matrix of order ``c`` where one exists and ``n / c`` is a power of
    two: Paley I (order ``q + 1``, ``q ≡ 3 mod 4`` prime: 4, 8, 12, 20, 24, 32, 44, ...) or Paley II
    (order ``2(q + 1)``, ``q ≡ 1 mod 4`` prime: 12, 28, 36, 60, ...). The smallest such order is
    used. SmolLM2-135M's widths are covered this way: ``576 = 16 · 36`` (Paley II, ``q = 17``),
    ``1536 = 128 · 12`` (Paley I, ``q = 11``), ``192 = 16 · 12``. Then every entry of ``K`` is
    ``±1/√n``, the most incoherent an orthogonal matrix can be;
  - otherwise a Haar-random orthogonal matrix of order ``c`` (the odd part of ``n``), drawn from
    the same seed: still exactly orthogonal, slightly less incoherent.

Every transform here is exactly orthogonal in exact arithmetic (float32 keeps ``TᵀT = I`` to about
1e-6), so a weight transformed on both sides and transformed back is the weight again.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

#: Largest prime tried for a Paley factor (orders up to 2 · (q + 1)).
_MAX_PALEY_PRIME = 251


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, int(q**0.5) + 1))


def _legendre(a: int, q: int) -> int:
    """The quadratic character of ``a`` modulo the odd prime ``q`` (0, 1 or -1)."""
    a %= q
    if a == 0:
        return 0
    return 1 if pow(a, (q - 1) // 2, q) == 1 else -1


def _jacobsthal(q: int) -> np.ndarray:
    import numpy as np

    return np.array([[_legendre(j - i, q) for j in range(q)] for i in range(q)], dtype=np.int64)


@cache
def paley_hadamard(order: int) -> np.ndarray | None:
    """A Hadamard matrix (entries ±1, ``H Hᵀ = order · I``) of ``order`` from a Paley construction, or None."""
    import numpy as np

    q = order - 1
    if q % 4 == 3 and _is_prime(q):  # Paley I
        jac = _jacobsthal(q)
        s = np.zeros((order, order), dtype=np.int64)
        s[0, 1:] = 1
        s[1:, 0] = -1
        s[1:, 1:] = jac
        h = s + np.eye(order, dtype=np.int64)
    elif order % 2 == 0 and (order // 2 - 1) % 4 == 1 and _is_prime(order // 2 - 1):  # Paley II
        q = order // 2 - 1
        conf = np.zeros((q + 1, q + 1), dtype=np.int64)
        conf[0, 1:] = 1
        conf[1:, 0] = 1
        conf[1:, 1:] = _jacobsthal(q)
        h = np.kron(conf, np.array([[1, 1], [1, -1]])) + np.kron(
            np.eye(q + 1, dtype=np.int64), np.array([[1, -1], [-1, -1]])
        )
    else:
        return None
    if not np.array_equal(h @ h.T, order * np.eye(order, dtype=np.int64)):  # pragma: no cover - construction bug
        raise AssertionError(f"Paley construction of order {order} is not a Hadamard matrix")
    return h


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def factor_width(n: int) -> tuple[int, int, str]:
    """``(p, c, kind)`` with ``n = p · c``, ``p`` a power of two and the ``c × c`` factor's kind.

    ``kind`` is ``"none"`` (``c = 1``), ``"paley"`` or ``"random"`` (see the module docstring).
    """
    if n <= 0:
        raise ValueError(f"a transform needs a positive width, not {n}")
    odd = n
    while odd % 2 == 0:
        odd //= 2
    if odd == 1:
        return n, 1, "none"
    order = odd
    while order <= 2 * (_MAX_PALEY_PRIME + 1) and n % order == 0:
        if _power_of_two(n // order) and paley_hadamard(order) is not None:
            return n // order, order, "paley"
        order *= 2
    return n // odd, odd, "random"


def layer_seed(seed: int, *names: str) -> int:
    """A stable 63-bit seed from the recipe's ``seed`` and names (the same on every machine and run)."""
    text = "\x1f".join((str(seed), *names))
    return (zlib.crc32(text.encode()) | (zlib.crc32(text[::-1].encode()) << 32)) & 0x7FFF_FFFF_FFFF_FFFF


def fwht(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The unnormalised Walsh–Hadamard transform (Sylvester order) of ``x`` along ``dim``.

    The size along ``dim`` must be a power of two; the result equals ``x @ scipy.linalg.hadamard(p)``
    along that dimension (the matrix is symmetric).
    """
    import torch

    x = x.movedim(dim, -1)
    p = x.shape[-1]
    if not _power_of_two(p):
        raise ValueError(f"the fast Walsh-Hadamard transform needs a power-of-two size, not {p}")
    lead = x.shape[:-1]
    y = x.reshape(-1, p)
    h = 1
    while h < p:
        y = y.reshape(-1, p // (2 * h), 2, h)
        first, second = y[:, :, 0], y[:, :, 1]
        y = torch.stack((first + second, first - second), dim=2)
        h *= 2
    return y.reshape(*lead, p).movedim(-1, dim)


@dataclass
class RandomHadamard:
    """``T = (H_p / √p ⊗ B) · diag(signs)`` of width ``n = p · c`` (see the module docstring).

    :meth:`apply` maps every row ``v`` of its input to ``T v``; :meth:`invert` to ``Tᵀ v``.
    """

    signs: torch.Tensor
    """``[n]`` of ±1 (float32)."""
    p: int
    factor: torch.Tensor
    """``B``: ``[c, c]`` orthogonal (float32)."""
    kind: str

    @classmethod
    def create(cls, n: int, seed: int, device: torch.device | str = "cpu") -> RandomHadamard:
        """The transform of width ``n`` drawn from ``seed`` (signs, and ``B`` where it is random)."""
        import numpy as np
        import torch

        p, c, kind = factor_width(n)
        generator = torch.Generator().manual_seed(seed)
        signs = torch.randint(0, 2, (n,), generator=generator).to(torch.float32) * 2 - 1
        if kind == "none":
            factor = torch.ones(1, 1)
        elif kind == "paley":
            h = paley_hadamard(c)
            factor = torch.from_numpy(np.asarray(h, dtype=np.float64) / np.sqrt(c)).to(torch.float32)
        else:
            gauss = torch.randn(c, c, generator=generator, dtype=torch.float64)
            q, r = torch.linalg.qr(gauss)
            factor = (q * torch.sign(torch.diagonal(r))[None, :]).to(torch.float32)
        return cls(signs=signs.to(device), p=p, factor=factor.to(device), kind=kind)

    @property
    def n(self) -> int:
        return int(self.signs.shape[0])

    def _kron(self, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """Rows of ``x [N, n]`` times ``(H_p / √p ⊗ factor)``ᵀ, i.e. ``v ↦ (H_p / √p ⊗ factor) v``."""
        c = factor.shape[0]
        y = x.reshape(-1, self.p, c)
        if c > 1:
            y = y @ factor.T
        y = fwht(y, dim=1) * (self.p**-0.5)
        return y.reshape(x.shape)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., n]`` with every row ``v`` replaced by ``T v`` (float32)."""
        import torch

        x = x.to(torch.float32)
        return self._kron(x.reshape(-1, self.n) * self.signs, self.factor).reshape(x.shape)

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., n]`` with every row ``v`` replaced by ``Tᵀ v`` (the inverse of :meth:`apply`)."""
        import torch

        x = x.to(torch.float32)
        return (self._kron(x.reshape(-1, self.n), self.factor.T) * self.signs).reshape(x.shape)

    def matrix(self) -> torch.Tensor:
        """``T`` as a dense ``[n, n]`` matrix (for tests)."""
        import torch

        return self.apply(torch.eye(self.n, device=self.signs.device)).T


def transform_weight(weight: torch.Tensor, out_t: RandomHadamard, in_t: RandomHadamard) -> torch.Tensor:
    """``W̃ = T_out W T_inᵀ`` for ``W [out, in]``."""
    return out_t.apply(in_t.apply(weight).T).T


def restore_weight(weight: torch.Tensor, out_t: RandomHadamard, in_t: RandomHadamard) -> torch.Tensor:
    """``W = T_outᵀ W̃ T_in``: the inverse of :func:`transform_weight`."""
    return out_t.invert(in_t.invert(weight).T).T


def transform_hessian(hessian: torch.Tensor, in_t: RandomHadamard) -> torch.Tensor:
    """``H̃ = T H Tᵀ`` for a symmetric ``H [n, n]`` (symmetrised against rounding)."""
    h = in_t.apply(in_t.apply(hessian).T)
    return (h + h.T) / 2
