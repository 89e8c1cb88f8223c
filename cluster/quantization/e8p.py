"""QuIP#'s lattice codebooks: E8P (2 bits per weight) and the 1-bit residual codebook of its 3-bit mode.

E8P ("padded E8", Tseng et al. 2024, section 4.2) quantizes 8 weights at once to one of 2^16
points of the shifted E8 lattice ``E8 + 1/4`` (``E8``: the vectors of ``Z^8 ∪ (Z + 1/2)^8`` with an
even coordinate sum; ``1/4`` is the all-``1/4`` vector). It is built from three pieces, which also
make up its 16-bit index ``source << 8 | signs << 1 | shift``:

* 256 **source** vectors of absolute values (8 bits). ``D̂8`` is the half-integer part of E8
  (coordinates in ``Z + 1/2``, even sum). The absolute values of its points with squared norm at
  most 10 form 227 distinct vectors (every coordinate ``1/2``, with up to four ``3/2``, or one
  ``5/2`` and at most one ``3/2``); the paper pads them with 29 vectors of squared norm 12 to reach
  256. The paper's count fixes 29 but not which ones (as far as its text goes), so qtrust's
  rule is: vectors with five ``3/2`` and three ``1/2`` (one of the two orbits of norm 12 under
  permutation; the other has one ``5/2`` and two ``3/2``), the first 29 in descending
  lexicographic order of their levels (``0, 1, 2`` for ``1/2, 3/2, 5/2``). Measured on 192k
  Gaussian coordinates at the best scale: mean squared error 0.0913 with these, 0.0917 with 29
  of the other orbit, 0.0939 with no padding (227 sources).
* 7 **sign** bits: a sign pattern whose signed sum is even keeps the point in ``D̂8``, so of the
  8 signs only 7 are free; the last one is set by parity (flipping the sign of a half-integer
  changes the sum by an odd number).
* 1 **shift** bit: ``+1/4`` or ``-1/4`` on every coordinate. Both cosets lie on ``E8 + 1/4``
  (``D̂8 - 1/4 = D̂8 + 1/4 - 1/2`` and the all-``1/2`` vector is in E8), and they are disjoint
  (coordinates in ``Z + 3/4`` versus ``Z + 1/4``), so the 2^16 entries are distinct. The set is
  symmetric under negation, like the Gaussian weights it quantizes.

Nearest-codeword search (:func:`e8p_nearest`) is exact and never scans the 65536 entries. Per
shift, with ``y = x ∓ 1/4`` and ``a = |y|``: for a source vector ``s`` the best signs are those of
``y``; when their parity is wrong for ``s`` the cheapest fix flips one coordinate ``j``, which costs
``(a_j + s_j)² - (a_j - s_j)² = 4 a_j s_j``. The 227 dense sources are closed under permutation, so
they reduce to 7 sorted patterns scored against ``a`` sorted ascending (by the rearrangement
inequality the sorted pairing is the best permutation, and a parity fix flips the smallest ``a``);
the 29 padding vectors are scored one by one. That is 36 candidates per shift instead of 32768, and
the better shift wins. :func:`e8p_brute_force` is the reference the tests compare it with.

The 3-bit mode adds a **1-bit** residual codebook of 256 8-dimensional points (8 bits per 8
weights): the E8P entries whose source vector is all ``1/2`` (:func:`one_bit_codebook`), i.e.
``{±1/2}^8`` with an even number of minus signs, shifted by ``±1/4``. They lie on the same lattice
``E8 + 1/4``, hold all 58 points of it with squared norm ≤ 1.5 and 140 of the 252 at 2.5 (a compact,
symmetric ball-like set, which suits a residual that is spread evenly around 0), and they are
searched the same way (the source step is trivial). A plain sign quantizer ``{±c}^8`` has the same
rate but covers worse: on the residuals of Gaussian weights after E8P its best error is about 5 %
higher (measured; see the tests).
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import torch

#: Entries of the E8P codebook (16-bit indices).
E8P_SIZE = 1 << 16
#: Source vectors (absolute values) of E8P.
SOURCE_SIZE = 256
#: Entries of the 1-bit residual codebook (8-bit indices).
ONE_BIT_SIZE = 256
#: Weights per codeword.
DIM = 8
#: Squared norm bound of the 227 "dense" source vectors, and the norm of the 29 padding ones.
_DENSE_NORM = 10.0
_PAD_NORM = 12.0
_PAD_COUNT = SOURCE_SIZE - 227


def _abs_levels(max_level: int) -> list[tuple[int, ...]]:
    """Every vector of 8 levels ``0..max_level`` (level ``l`` is the absolute value ``l + 1/2``)."""
    return list(itertools.product(range(max_level + 1), repeat=DIM))


def _norm(levels: tuple[int, ...]) -> float:
    return sum((level + 0.5) ** 2 for level in levels)


@lru_cache(maxsize=1)
def source_levels() -> tuple[tuple[int, ...], ...]:
    """The 256 source vectors as levels (``0, 1, 2`` for ``1/2, 3/2, 5/2``), in index order.

    Order: the 227 vectors of squared norm ≤ 10, by norm and then lexicographically; then the 29
    padding vectors of norm 12 (see the module docstring for the rule).
    """
    candidates = _abs_levels(2)
    dense = sorted((v for v in candidates if _norm(v) <= _DENSE_NORM), key=lambda v: (_norm(v), v))
    five_threes = [v for v in candidates if _norm(v) == _PAD_NORM and v.count(1) == 5]
    pad = sorted(five_threes, reverse=True)[:_PAD_COUNT]
    levels = tuple(dense + pad)
    if len(dense) != 227 or len(levels) != SOURCE_SIZE:  # pragma: no cover - a construction error
        raise AssertionError(f"E8P source set has {len(dense)} + {len(pad)} vectors, expected 227 + 29")
    return levels


def source_vectors(device: torch.device | str | None = None) -> torch.Tensor:
    """The 256 source vectors (absolute values ``1/2, 3/2, 5/2``) as ``[256, 8]`` float32, in index order."""
    return _tables(str(device or "cpu")).source.clone()


class _Tables(NamedTuple):
    """The source set in the forms the search uses (on one device)."""

    source: torch.Tensor
    """``[256, 8]`` absolute values."""
    parity: torch.Tensor
    """``[256]`` bool: Σ levels is odd (then the number of minus signs must be odd too)."""
    lookup: torch.Tensor
    """``[3^8]``: source index of a level vector (key ``Σ level_i 3^i``), or -1."""
    patterns: torch.Tensor
    """``[7, 8]``: the sorted (ascending) absolute values of the permutation-closed dense part."""
    pads: torch.Tensor
    """``[29, 8]``: the padding vectors (not closed under permutation: scored one by one)."""
    patterns_t: torch.Tensor
    pads_t: torch.Tensor
    candidate_sq: torch.Tensor
    """``[36, 1]``: squared norms of the patterns, then of the pads."""
    candidate_parity: torch.Tensor
    """``[36, 1]``: their parity bits."""


@lru_cache(maxsize=4)
def _tables(device: str) -> _Tables:
    import torch

    levels = torch.tensor(source_levels(), dtype=torch.int64, device=device)
    # The signed sum of a D̂8 point is even iff (minus signs + Σ levels) is even: Σ ±(l + 1/2)
    # = Σ ±l + (8 - 2·minus)/2, and ±l has the parity of l.
    parity = levels.sum(dim=1) % 2 == 1
    powers = 3 ** torch.arange(DIM, device=device)
    lookup = torch.full((3**DIM,), -1, dtype=torch.int64, device=device)
    lookup[(levels * powers).sum(dim=1)] = torch.arange(SOURCE_SIZE, device=device)
    dense = levels[: SOURCE_SIZE - _PAD_COUNT]
    patterns = torch.unique(dense.sort(dim=1).values, dim=0)
    pads = levels[SOURCE_SIZE - _PAD_COUNT :]
    candidates = torch.cat((patterns, pads)).to(torch.float32) + 0.5
    return _Tables(
        source=levels.to(torch.float32) + 0.5,
        parity=parity,
        lookup=lookup,
        patterns=patterns.to(torch.float32) + 0.5,
        pads=pads.to(torch.float32) + 0.5,
        patterns_t=(patterns.to(torch.float32) + 0.5).T.contiguous(),
        pads_t=(pads.to(torch.float32) + 0.5).T.contiguous(),
        candidate_sq=(candidates**2).sum(dim=1)[:, None],
        candidate_parity=(torch.cat((patterns, pads)).sum(dim=1) % 2 == 1)[:, None],
    )


def _signed(source: torch.Tensor, negative: torch.Tensor, shift_bit: torch.Tensor) -> torch.Tensor:
    """Codewords from absolute values ``[N, 8]``, minus-sign flags ``[N, 8]`` and shift bits ``[N]``."""
    shift = 0.25 - 0.5 * shift_bit.to(source.dtype)
    return _negate(source, negative) + shift[:, None]


def _negate(values: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """``values`` with the entries flagged in ``negative`` negated."""
    return values * (1.0 - 2.0 * negative.to(values.dtype))


def e8p_decode(index: torch.Tensor) -> torch.Tensor:
    """The E8P codewords ``[..., 8]`` of 16-bit indices ``index`` (any integer tensor)."""
    import torch

    t = _tables(str(index.device))
    source, parity = t.source, t.parity
    flat = index.reshape(-1).to(torch.int64)
    src = (flat >> 8) & 0xFF
    bits = (flat >> 1) & 0x7F
    shift_bit = flat & 1
    negative = torch.zeros(flat.shape[0], DIM, dtype=torch.int64, device=flat.device)
    negative[:, :7] = (bits[:, None] >> torch.arange(7, device=flat.device)) & 1
    negative[:, 7] = (negative[:, :7].sum(dim=1) + parity[src].to(torch.int64)) % 2
    return _signed(source[src], negative, shift_bit).reshape(*index.shape, DIM)


def e8p_codebook(device: torch.device | str | None = None) -> torch.Tensor:
    """All 65536 E8P codewords ``[65536, 8]`` in index order."""
    import torch

    return e8p_decode(torch.arange(E8P_SIZE, device=device or "cpu"))


def _index(src: torch.Tensor, negative: torch.Tensor, shift_bit: torch.Tensor) -> torch.Tensor:
    import torch

    weights = 1 << torch.arange(7, device=src.device)
    bits = (negative[:, :7].to(torch.int64) * weights).sum(dim=1)
    return (src << 8) | (bits << 1) | shift_bit.to(torch.int64)


def _nearest_coset(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest codeword of the unshifted coset ``{signs · source, even signed sum}`` to each column of ``y [8, M]``.

    For a source vector ``s`` and ``a = |y|`` the best signs are those of ``y``; when their parity
    is wrong for ``s``, flipping coordinate ``j`` costs ``(a_j + s_j)² - (a_j - s_j)² = 4 a_j s_j``
    and the cheapest ``j`` is taken. The 227 dense sources are closed under permutation, so only
    their 7 sorted patterns are scored, against ``a`` sorted ascending (rearrangement inequality:
    the sorted pairing is the best permutation, and with wrong parity the smallest ``a`` pairs with
    the smallest level and is the one flipped). The 29 padding vectors are scored one by one.
    Returns ``(distance² [M], absolute values [8, M], minus flags [8, M])`` of the chosen codewords.

    Vectors are columns (and masks are multiplied rather than passed to ``torch.where``): on CPU
    that layout runs several times faster for these short rows.
    """
    import torch

    t = _tables(str(y.device))
    a = y.abs()
    minus = y < 0
    odd = minus.sum(dim=0) % 2 == 1
    a_sorted, order = a.sort(dim=0)
    patterns = t.patterns.shape[0]
    # Squared distances to every candidate with the signs of y: ‖a‖² - 2 a·s + ‖s‖².
    dot = torch.cat((t.patterns @ a_sorted, t.pads @ a))
    cost = (a * a).sum(dim=0, keepdim=True) - 2.0 * dot + t.candidate_sq
    penalty_pads = t.pads[:, :1] * a[:1]
    for j in range(1, DIM):
        penalty_pads = torch.minimum(penalty_pads, t.pads[:, j : j + 1] * a[j : j + 1])
    penalty = torch.cat((t.patterns[:, :1] * a_sorted[:1], penalty_pads))
    wrong = odd[None, :] ^ t.candidate_parity
    cost += penalty.mul_(4.0).masked_fill_(~wrong, 0.0)
    best_cost, best = cost.min(dim=0)

    # Absolute values back in the input's coordinate order, and the coordinate a parity fix flips.
    values = torch.empty_like(a).scatter_(0, order, t.patterns_t[:, best.clamp(max=patterns - 1)])
    flip = order[0].clone()
    padded = (best >= patterns).nonzero().squeeze(1)
    if padded.numel():
        chosen = t.pads_t[:, best[padded] - patterns]
        values[:, padded] = chosen
        flip[padded] = (a[:, padded] * chosen).argmin(dim=0)
    fix = (torch.arange(DIM, device=y.device)[:, None] == flip[None, :]) & wrong.gather(0, best[None, :])
    return best_cost, values, minus ^ fix


def e8p_nearest(x: torch.Tensor, *, index: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The nearest E8P codeword of every row of ``x [N, 8]``: ``(codewords [N, 8], 16-bit indices [N])``.

    Exact (equal distances to :func:`e8p_brute_force`); float32. ``index=False`` skips the indices
    (None), which BlockLDLQ does not need.
    """
    import torch

    xt = x.to(torch.float32).T
    rows = xt.shape[1]
    # Both shifts in one pass: columns [0, N) are x - 1/4 (shift +1/4), columns [N, 2N) are x + 1/4.
    cost, values, minus = _nearest_coset(torch.cat((xt - 0.25, xt + 0.25), dim=1))
    use_minus = cost[rows:] < cost[:rows]
    pick = torch.where(use_minus[None, :], values[:, rows:], values[:, :rows])
    flags = torch.where(use_minus[None, :], minus[:, rows:], minus[:, :rows])
    point = pick.masked_fill(flags, 0.0) * 2.0 - pick
    point += torch.where(use_minus, -0.25, 0.25)[None, :]
    point = point.T
    if not index:
        return point, None
    t = _tables(str(x.device))
    levels = (pick.T - 0.5).round().to(torch.int64)
    src = t.lookup[(levels * (3 ** torch.arange(DIM, device=x.device))).sum(dim=1)]
    return point, _index(src, flags.T, use_minus.to(torch.int64))


def e8p_brute_force(x: torch.Tensor, *, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference search over all 65536 codewords (slow; for tests): ``(codewords, indices)``."""
    import torch

    book = e8p_codebook(x.device)
    return nearest_in(x.to(torch.float32), book, chunk=chunk)


def nearest_in(x: torch.Tensor, book: torch.Tensor, *, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force nearest rows of ``book [K, 8]`` to the rows of ``x [N, 8]``: ``(codewords, indices)``."""
    import torch

    norms = (book**2).sum(dim=1)
    indices = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk]
        indices[start : start + chunk] = (norms[None, :] - 2.0 * (part @ book.T)).argmin(dim=1)
    return book[indices], indices


def one_bit_codebook(device: torch.device | str | None = None) -> torch.Tensor:
    """The 256 codewords ``[256, 8]`` of the 1-bit residual codebook (E8P entries of source all-``1/2``)."""
    import torch

    index = torch.arange(ONE_BIT_SIZE, device=device or "cpu")
    # Source 0 is the all-1/2 vector (the smallest norm comes first).
    return e8p_decode(index)


def one_bit_nearest(x: torch.Tensor, *, index: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The nearest 1-bit codeword of every row of ``x [N, 8]``: ``(codewords, 8-bit indices or None)``.

    Per shift: the signs of ``x ∓ 1/4``, and when their count of minus signs is odd, the coordinate
    closest to zero flips (it costs ``4 · |y_j| · 1/2``, smallest for the smallest ``|y_j|``).
    """
    import torch

    x = x.to(torch.float32)
    rows = x.shape[0]
    y = torch.cat((x - 0.25, x + 0.25))
    a = y.abs()
    minus = y < 0
    odd = minus.sum(dim=1, keepdim=True) % 2 == 1
    flip = torch.arange(DIM, device=x.device)[None, :] == a.argmin(dim=1, keepdim=True)
    minus = minus ^ (flip & odd)
    point = _negate(torch.full_like(y, 0.5), minus)
    cost = ((y - point) ** 2).sum(dim=1)
    use_minus = cost[rows:] < cost[:rows]
    flags = torch.where(use_minus[:, None], minus[rows:], minus[:rows])
    point = _negate(torch.full_like(x, 0.5), flags) + torch.where(use_minus, -0.25, 0.25)[:, None]
    if not index:
        return point, None
    src = torch.zeros(rows, dtype=torch.int64, device=x.device)
    return point, _index(src, flags, use_minus.to(torch.int64))
