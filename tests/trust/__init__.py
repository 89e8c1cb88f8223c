"""Tests of :mod:`trust` (pure Python, no Ray)."""
