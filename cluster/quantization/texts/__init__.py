"""qtrust's own English text sets, shipped as package data.

* ``probe``: about two dozen short paragraphs for the quick perplexity probe
  (:mod:`cluster.quantization.probe`).
* ``calibration``: about eighty longer paragraphs, the default GPTQ/AWQ calibration set
  (``calibration.source: builtin``). It shares no text with ``probe``.

Files are UTF-8, one sample per paragraph, paragraphs separated by blank lines.
"""

from __future__ import annotations

import re
from importlib import resources

#: The text sets shipped with the package.
TEXT_SETS = ("probe", "calibration")


def split_paragraphs(text: str) -> list[str]:
    """Split ``text`` at blank lines; join each paragraph's lines with spaces; drop empty ones."""
    paragraphs = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    return [" ".join(line.strip() for line in p.strip().splitlines()) for p in paragraphs if p.strip()]


def load_text_set(name: str) -> list[str]:
    """The paragraphs of built-in text set ``name`` (``probe`` or ``calibration``).

    Raises:
        ValueError: ``name`` is not a built-in text set.
    """
    if name not in TEXT_SETS:
        raise ValueError(f"unknown text set {name!r}; built-in sets: {', '.join(TEXT_SETS)}")
    text = resources.files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return split_paragraphs(text)
