"""MACs and parameter counts from XLA, computed on abstract shapes (nothing is allocated)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np


def count_params(abstract_params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(flax.core.meta.unbox(abstract_params))))


def abstract_variables(model, image_shape):
    """ShapeDtypeStructs of the model's variables for images of `image_shape` (height, width, channels)."""
    images = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
    return jax.eval_shape(lambda: flax.core.meta.unbox(model.init(jax.random.key(0), jnp.zeros(images.shape))))


def forward_macs(model, image_shape, abstract_vars=None) -> float:
    """Multiply-accumulates of one forward pass on one image, as counted by XLA's cost analysis
    (flops / 2; XLA counts a multiply-add as two flops)."""
    abstract_vars = abstract_vars or abstract_variables(model, image_shape)
    images = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
    compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(abstract_vars, images).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"]) / 2
