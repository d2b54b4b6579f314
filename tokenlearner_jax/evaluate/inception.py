"""InceptionV3's pool-3 features (2048-d), the feature network of FID, with weights from a file the user
supplies (.safetensors or .npz) named as torchvision's `inception_v3().state_dict()`.

The network is torchvision's Inception3 (Szegedy et al., arXiv 1512.00567) up to its global average pool,
in NHWC: every convolution is conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU; the
stem (Conv2d_1a .. Conv2d_4a with two 3x3 / 2 max pools), Mixed_5b-5d (InceptionA), Mixed_6a
(InceptionB), Mixed_6b-6e (InceptionC), Mixed_7a (InceptionD), Mixed_7b-7c (InceptionE); the auxiliary
classifier and the final Dense are not built (their weights are ignored).

`fid_blocks=True` gives the blocks of the TensorFlow Inception graph that FID was defined with (as
pytorch-fid rebuilds it around its FID weights): the 3x3 average pools of the pool branches of Mixed_5b-5d,
6b-6e and 7b leave the padding out of their counts, and Mixed_7c's pool branch is a 3x3 max pool.

Input: images `[batch, h, w, 3]` in [-1, 1] (the range both torchvision's ImageNet weights, through their
`transform_input`, and pytorch-fid feed the network), resized bilinearly (half-pixel centres, no
antialiasing: torch's `interpolate(..., align_corners=False)`) to `size` x `size`, 299 by default.
"""

from typing import Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Blocks in order: (name, kind, argument) with InceptionA's pool features and InceptionC's 7x7 width.
BLOCKS = (("Mixed_5b", "A", 32), ("Mixed_5c", "A", 64), ("Mixed_5d", "A", 64), ("Mixed_6a", "B", None),
          ("Mixed_6b", "C", 128), ("Mixed_6c", "C", 160), ("Mixed_6d", "C", 160), ("Mixed_6e", "C", 192),
          ("Mixed_7a", "D", None), ("Mixed_7b", "E", None), ("Mixed_7c", "E", None))
IGNORED_PREFIXES = ("fc.", "AuxLogits.")
FEATURES = 2048


class BasicConv(nn.Module):
    """conv (no bias) -> BatchNorm (running statistics, eps 1e-3) -> ReLU, torchvision's BasicConv2d."""

    features: int
    kernel: Sequence[int]
    strides: int = 1
    padding: Sequence[int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.features, tuple(self.kernel), (self.strides, self.strides), use_bias=False, name="conv",
                    padding=((self.padding[0], self.padding[0]), (self.padding[1], self.padding[1])))(x)
        return nn.relu(nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x))


def _pool_branch(x, fid_blocks: bool, max_pool: bool = False):
    """The 3x3 / 1 pool (padding 1) before a pool branch's 1x1 conv."""
    if max_pool:
        return nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=not fid_blocks)


def _reduce(x):
    return nn.max_pool(x, (3, 3), (2, 2))


class InceptionBlock(nn.Module):
    """One of torchvision's InceptionA-E (`kind`), its branches concatenated on channels."""

    kind: str
    argument: Optional[int] = None
    fid_blocks: bool = False
    max_pool_branch: bool = False

    @nn.compact
    def __call__(self, x):
        conv = lambda f, k, name, s=1, p=(0, 0): BasicConv(f, k, s, p, name=name)
        if self.kind == "A":
            b5 = conv(64, (5, 5), "branch5x5_2", p=(2, 2))(conv(48, (1, 1), "branch5x5_1")(x))
            b3 = conv(64, (1, 1), "branch3x3dbl_1")(x)
            b3 = conv(96, (3, 3), "branch3x3dbl_3", p=(1, 1))(conv(96, (3, 3), "branch3x3dbl_2", p=(1, 1))(b3))
            pool = conv(self.argument, (1, 1), "branch_pool")(_pool_branch(x, self.fid_blocks))
            return jnp.concatenate([conv(64, (1, 1), "branch1x1")(x), b5, b3, pool], -1)
        if self.kind == "B":
            b3 = conv(384, (3, 3), "branch3x3", s=2)(x)
            d = conv(96, (3, 3), "branch3x3dbl_2", p=(1, 1))(conv(64, (1, 1), "branch3x3dbl_1")(x))
            return jnp.concatenate([b3, conv(96, (3, 3), "branch3x3dbl_3", s=2)(d), _reduce(x)], -1)
        if self.kind == "C":
            c7 = self.argument
            b7 = conv(c7, (1, 7), "branch7x7_2", p=(0, 3))(conv(c7, (1, 1), "branch7x7_1")(x))
            b7 = conv(192, (7, 1), "branch7x7_3", p=(3, 0))(b7)
            d = conv(c7, (1, 1), "branch7x7dbl_1")(x)
            for i, (f, k, p) in enumerate((((c7, (7, 1), (3, 0))), (c7, (1, 7), (0, 3)), (c7, (7, 1), (3, 0)),
                                           (192, (1, 7), (0, 3))), start=2):
                d = conv(f, k, f"branch7x7dbl_{i}", p=p)(d)
            pool = conv(192, (1, 1), "branch_pool")(_pool_branch(x, self.fid_blocks))
            return jnp.concatenate([conv(192, (1, 1), "branch1x1")(x), b7, d, pool], -1)
        if self.kind == "D":
            b3 = conv(320, (3, 3), "branch3x3_2", s=2)(conv(192, (1, 1), "branch3x3_1")(x))
            b7 = conv(192, (1, 7), "branch7x7x3_2", p=(0, 3))(conv(192, (1, 1), "branch7x7x3_1")(x))
            b7 = conv(192, (3, 3), "branch7x7x3_4", s=2)(conv(192, (7, 1), "branch7x7x3_3", p=(3, 0))(b7))
            return jnp.concatenate([b3, b7, _reduce(x)], -1)
        if self.kind != "E":
            raise ValueError(f"InceptionBlock: kind {self.kind!r} is not one of A-E")
        b3 = conv(384, (1, 1), "branch3x3_1")(x)
        b3 = jnp.concatenate([conv(384, (1, 3), "branch3x3_2a", p=(0, 1))(b3),
                              conv(384, (3, 1), "branch3x3_2b", p=(1, 0))(b3)], -1)
        d = conv(384, (3, 3), "branch3x3dbl_2", p=(1, 1))(conv(448, (1, 1), "branch3x3dbl_1")(x))
        d = jnp.concatenate([conv(384, (1, 3), "branch3x3dbl_3a", p=(0, 1))(d),
                             conv(384, (3, 1), "branch3x3dbl_3b", p=(1, 0))(d)], -1)
        pool = conv(192, (1, 1), "branch_pool")(_pool_branch(x, self.fid_blocks, self.max_pool_branch))
        return jnp.concatenate([conv(320, (1, 1), "branch1x1")(x), b3, d, pool], -1)


class InceptionV3(nn.Module):
    """Images `[batch, h, w, 3]` in [-1, 1] -> pool-3 features `[batch, 2048]` (module docstring)."""

    fid_blocks: bool = False
    size: int = 299

    @nn.compact
    def __call__(self, images):
        x = jax.image.resize(images.astype(jnp.float32), (images.shape[0], self.size, self.size, images.shape[3]),
                             "bilinear", antialias=False)
        x = BasicConv(32, (3, 3), 2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = _reduce(BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x))
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = _reduce(BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x))
        for name, kind, argument in BLOCKS:
            x = InceptionBlock(kind, argument, self.fid_blocks, max_pool_branch=self.fid_blocks and name == "Mixed_7c",
                               name=name)(x)
        return jnp.mean(x, axis=(1, 2))


def variables_from_torchvision(state_dict: dict, model: Optional[InceptionV3] = None) -> dict:
    """{'params', 'batch_stats'} of `InceptionV3` from arrays named as torchvision's state_dict
    ('Mixed_5b.branch1x1.conv.weight' `[out, in, kh, kw]`, '....bn.weight' / 'bias' / 'running_mean' /
    'running_var'). The auxiliary classifier, the final Dense and 'num_batches_tracked' are ignored; any
    other name left over, a missing tensor or a shape that differs is an error naming it."""
    model = model or InceptionV3()
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 75, 75, 3))))
    flat_params = flax.traverse_util.flatten_dict(abstract["params"])
    flat_stats = flax.traverse_util.flatten_dict(abstract["batch_stats"])
    used, params, stats = set(), {}, {}
    for targets, table in ((params, flat_params), (stats, flat_stats)):
        for path, leaf in table.items():
            *module, field = path
            prefix = ".".join(module)
            name = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                    "var": "running_var"}[field]
            key = f"{prefix}.{name}"
            if key not in state_dict:
                raise ValueError(f"InceptionV3 weights: {key!r} is missing")
            value = np.asarray(state_dict[key], np.float32)
            if field == "kernel":
                value = value.transpose(2, 3, 1, 0)  # [out, in, kh, kw] -> [kh, kw, in, out]
            if value.shape != leaf.shape:
                raise ValueError(f"InceptionV3 weights: {key!r} has shape {value.shape} after transposition, "
                                 f"expected {leaf.shape}")
            targets[path] = value
            used.add(key)
    leftover = sorted(k for k in state_dict if k not in used and not k.startswith(IGNORED_PREFIXES)
                      and not k.endswith("num_batches_tracked"))
    if leftover:
        raise ValueError(f"InceptionV3 weights: {len(leftover)} tensors are not InceptionV3's, e.g. {leftover[:5]}")
    return {"params": flax.traverse_util.unflatten_dict(params),
            "batch_stats": flax.traverse_util.unflatten_dict(stats)}


def read_weights(path: str) -> dict:
    """{name: NumPy array} of a .safetensors or .npz file."""
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

        return load_file(path)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    raise ValueError(f"{path!r}: expected a .safetensors or .npz file of InceptionV3 weights")
