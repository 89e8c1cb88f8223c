"""Tests of :mod:`cluster`: engines, quantization, models, variants, judge workers."""
