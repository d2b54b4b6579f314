"""MACs and parameter counts, computed on abstract shapes (nothing is allocated): XLA's count of the
whole forward pass (`forward_macs`) or the dot / convolution MACs of the traced program (`matmul_macs`)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core


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


def matmul_macs(model, image_shape, abstract_vars=None) -> float:
    """Multiply-accumulates of the dot products and convolutions of one forward pass on one image, read
    off the traced program. Element-wise work (norms, activations, pooling, residual adds), which XLA's
    count in `forward_macs` includes, is left out: this is what papers report as (G)FLOPs / MACs."""
    abstract_vars = abstract_vars or abstract_variables(model, image_shape)
    images = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(abstract_vars, images)
    return float(_jaxpr_macs(closed.jaxpr))


def model_costs(model, image_shape) -> dict:
    """Parameter count, dot + conv MACs (`matmul_macs`) and XLA's MACs (`forward_macs`) of one forward pass
    on one input of `image_shape`, from one set of abstract variables (nothing is allocated)."""
    abstract = abstract_variables(model, image_shape)
    return {"params": count_params(abstract["params"]), "matmul_macs": matmul_macs(model, image_shape, abstract),
            "xla_macs": forward_macs(model, image_shape, abstract)}


def _jaxpr_macs(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        out_size = int(np.prod(eqn.outvars[0].aval.shape)) if eqn.outvars else 0
        if eqn.primitive.name == "dot_general":
            (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            total += out_size * int(np.prod([lhs_shape[d] for d in lhs_contracting]))
        elif eqn.primitive.name == "conv_general_dilated":
            kernel_spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, spatial...)
            kernel_shape = eqn.invars[1].aval.shape
            total += out_size * int(np.prod([kernel_shape[d] for d in kernel_spec[1:]]))
        repeats = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for sub in jax_core.jaxprs_in_params(eqn.params):
            total += repeats * _jaxpr_macs(sub)
    return total
