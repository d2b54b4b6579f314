"""Training tasks, picked by `config.task` (see base.py for what a task owns and what the loop does)."""

from tokenlearner_jax.tasks import classification  # noqa: F401  (registers 'classification')
from tokenlearner_jax.tasks import gan  # noqa: F401  (registers 'gan')
from tokenlearner_jax.tasks import multilabel  # noqa: F401  (registers 'multilabel')
from tokenlearner_jax.tasks.base import EvalAccumulator, Task, get, names, register
