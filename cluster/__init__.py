"""Where it runs: Ray runtime, variant workers, engines, model loading and quantization.

Imports ``trust`` where needed, never ``jobs``."""
