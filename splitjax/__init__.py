"""splitjax: measuring privacy leakage in split learning, in JAX.

The pipeline, one module a step: `data` -> `models` -> `protocol` (server half,
device half, messages, ServerView) -> `defences` -> `training`.
"""

__version__ = "0.1.0"
