"""Built-in tasks. Each module registers its task with ``register_task``, as a plugin would."""

from lmtemplate.tasks import causal_lm, classification, masked_lm, qa, translation  # noqa: F401
