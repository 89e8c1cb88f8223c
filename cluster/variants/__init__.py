"""Model variants: their keys, the variant cache, loading one (transformers or vLLM) and the worker
actor that serves it."""
