"""Tests of :mod:`jobs`: spec, plan, pipeline, store, results, tracking and the CLI."""
