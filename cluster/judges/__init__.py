"""Where judges run: an OpenAI-compatible endpoint client (:mod:`cluster.judges.endpoint`); the model
judge's actor pool joins here. What a judge asks and how its answers are read is :mod:`trust.judges`."""
