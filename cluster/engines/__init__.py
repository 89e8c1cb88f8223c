"""Inference engines behind one small protocol (see :mod:`cluster.engines.base`)."""
