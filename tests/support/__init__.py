"""Helpers the tests share: builders, real servers started on 127.0.0.1, tiny models."""
