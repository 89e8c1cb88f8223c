"""Metrics: the ``@metric`` registry, the built-in functions and packs, composite expressions,
perspective scores."""
