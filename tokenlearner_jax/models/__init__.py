"""Backbones, one file each, built by name from `config.model` (see registry.py)."""

from tokenlearner_jax.models import gennest  # noqa: F401  (registers 'gennest')
from tokenlearner_jax.models import maxvit  # noqa: F401  (registers 'maxvit')
from tokenlearner_jax.models import nest  # noqa: F401  (registers 'nest')
from tokenlearner_jax.models import poolformer  # noqa: F401  (registers 'poolformer')
from tokenlearner_jax.models import sagan_discriminator  # noqa: F401  (registers 'sagan_discriminator')
from tokenlearner_jax.models import sagan_generator  # noqa: F401  (registers 'sagan_generator')
from tokenlearner_jax.models import vit  # noqa: F401  (registers 'vit')
from tokenlearner_jax.models import vivit  # noqa: F401  (registers 'vivit')
from tokenlearner_jax.models import x2plus1d  # noqa: F401  (registers 'x2plus1d')
from tokenlearner_jax.models.registry import build, config, names, register, validate
