"""Tests of :mod:`infra`: container images, cluster configs, Ray jobs."""
