"""GradCAT: gradient-based class-aware tree traversal of NesT (arXiv 2105.12723), and CAM beside it.

NesT's levels form a tree: with L levels and blocks of side S, level l's grid `[h_l, w_l]` is cut into
S x S blocks, and each block of level l covers the 2 x 2 group of level l-1 blocks it was aggregated
from (models/nest.py). For a target class c (the predicted one unless given), every level's output
features A_l `[h_l, w_l, C_l]` get a score map

    h_l = sum over channels of A_l * dY_c / dA_l        `[h_l, w_l]`

(gradient times activation: the first-order share of each position in Y_c). The top level's features are
taken after the head's LayerNorm (NesT's 'head_norm', `top_features='normalized'`, the default): its
output is invariant to the scale of each position's input, so gradient times activation of the raw top
level is zero at every position (up to the LayerNorm's epsilon) and carries no information; after the
norm, h is the CAM of class c minus its bias, over the number of positions (NesT's head is a mean and a
Dense). `top_features='level'` takes the raw output (and a model without 'head_norm' always does).
The lower levels' outputs go through the next aggregation's conv, which has a bias, before a LayerNorm,
so their maps are not degenerate, though they nearly sum to zero over a whole level when the conv's
bias is small. `objective='logit'` takes
Y_c as the class logit; 'log_softmax' takes its log-probability, whose gradient is minus that of the
cross-entropy loss of class c. The traversal starts at the top level's block of highest mean score (the
only one on a square image) and walks down, each time to the child of highest score among the node's
2 x 2 children, until it reaches a block of level 0; the path localises the evidence for c.

How a child is scored:
- 'parent' (default): the mean of the parent level's map h_l over the child's quadrant of the parent
  block (a 2 x 2 average pooling of the node's S x S scores), which is how we read the paper's
  algorithm; the bottom level's own map is then not used.
- 'child': the mean of the child level's map h_(l-1) over the child block.
The paper's text was not available to check these details against while this was written: the
objective's sign convention and the scoring of children are exposed as options, with the choices above
as defaults. Ties go to the first child in row-major order.

CAM (`class_activation_maps`): NesT's head is linear after the mean over positions, so the normalised top
grid (intermediates 'feature_map') times the head gives each position's logits, whose mean is the logits.
"""

import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

OBJECTIVES = ("logit", "log_softmax")
CHILD_SCORES = ("parent", "child")
TOP_FEATURES = ("normalized", "level")
_LEVEL = re.compile(r"^level_(\d+)$")
_HEAD_NORM = "head_norm"


@dataclasses.dataclass
class Traversal:
    """One image's path, from the top level down to level 0.

    Attributes:
      target: the class whose evidence was traced.
      levels: int `[L]` level of each node (L-1, ..., 0).
      blocks: int `[L]` index of each node's block in its level, row-major over the level's blocks (the
        order of layers/blocking.block_partition).
      scores: float `[L]` each node's score (the mean score it was chosen by).
      boxes: int `[L, 4]` each node's (top, left, bottom, right) in image pixels, ends exclusive.
    """

    target: int
    levels: np.ndarray
    blocks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray


def _apply_with_levels(model, variables, images, deltas):
    """logits and {name: output `[b, h, w, c]`} of the model's direct children named level_<i> or head_norm;
    with `deltas` ({name: array}) those outputs get their delta added (zeros: a gradient probe)."""
    outputs = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        name = context.module.name
        if (context.method_name == "__call__" and isinstance(name, str) and (_LEVEL.match(name) or name == _HEAD_NORM)
                and len(context.module.scope.path) == 1):
            if deltas is not None and name in deltas:
                out = out + deltas[name]
            outputs[name] = out
        return out

    with nn.intercept_methods(interceptor):
        logits = model.apply(variables, images, train=False)
    return logits, outputs


def level_features_and_gradients(model, variables, images, targets=None, objective: str = "logit",
                                 top_features: str = "normalized"):
    """Every level's features and the gradient of the target class's objective with respect to them.

    Args:
      model: a Flax module whose direct submodules `level_0 ... level_{L-1}` output grids `[b, h, w, c]`
        (NesT), called as `model.apply(variables, images, train=False) -> logits [b, classes]`; a direct
        submodule `head_norm` of the top level's output shape gives the normalised top features.
      targets: int `[b]` classes to trace; None takes the predicted ones.
      objective: 'logit' | 'log_softmax' (module docstring).
      top_features: 'normalized' | 'level' (module docstring).

    Returns:
      (logits `[b, classes]`, targets `[b]`, features, gradients): lists over levels 0..L-1 of `[b, h_l, w_l, c_l]`.
    Jittable; examples must not interact (no batch statistics), since the objective is summed over the batch.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r}: expected one of {OBJECTIVES}")
    if top_features not in TOP_FEATURES:
        raise ValueError(f"top_features={top_features!r}: expected one of {TOP_FEATURES}")
    shapes = jax.eval_shape(lambda: _apply_with_levels(model, variables, images, None)[1])
    names = sorted((n for n in shapes if _LEVEL.match(n)), key=lambda n: int(_LEVEL.match(n).group(1)))
    if [int(_LEVEL.match(n).group(1)) for n in names] != list(range(len(names))) or not names:
        raise ValueError(f"{type(model).__name__} has levels {names}: expected submodules level_0 ... level_(L-1)")
    if top_features == "normalized" and _HEAD_NORM in shapes and shapes[_HEAD_NORM].shape == shapes[names[-1]].shape:
        names[-1] = _HEAD_NORM
    zeros = {name: jnp.zeros(shapes[name].shape, shapes[name].dtype) for name in names}

    def objective_sum(deltas):
        logits, outputs = _apply_with_levels(model, variables, images, deltas)
        chosen = jnp.argmax(jax.lax.stop_gradient(logits), -1) if targets is None else jnp.asarray(targets)
        values = logits if objective == "logit" else jax.nn.log_softmax(logits.astype(jnp.float32))
        total = jnp.sum(jnp.take_along_axis(values, chosen[:, None], axis=1))
        return total, (logits, chosen, outputs)

    grads, (logits, chosen, outputs) = jax.grad(objective_sum, has_aux=True)(zeros)
    return logits, chosen, [outputs[n] for n in names], [grads[n] for n in names]


def score_maps(features, gradients):
    """h_l = sum over channels of A_l * dY/dA_l: a list of float32 `[b, h_l, w_l]`, one per level."""
    return [jnp.sum(a.astype(jnp.float32) * g.astype(jnp.float32), axis=-1) for a, g in zip(features, gradients)]


def _block_means(scores: np.ndarray, side: int) -> np.ndarray:
    """`[h, w]` -> `[h / side, w / side]` means over side x side squares."""
    h, w = scores.shape
    return scores.reshape(h // side, side, w // side, side).mean(axis=(1, 3))


def traverse(maps, image_shape, targets, child_scores: str = "parent"):
    """The GradCAT path of every image from its score maps (module docstring).

    Args:
      maps: per level 0..L-1, float `[b, h_l, w_l]`; each level halves the previous grid, and the top
        level's height is the block side S.
      image_shape: (height, width) of the images, a multiple of every grid's.
      targets: int `[b]` the traced classes (stored in the result).
      child_scores: 'parent' | 'child'.

    Returns: a list of `Traversal`, one per image.
    """
    if child_scores not in CHILD_SCORES:
        raise ValueError(f"child_scores={child_scores!r}: expected one of {CHILD_SCORES}")
    maps = [np.asarray(m, np.float64) for m in maps]
    side = maps[-1].shape[1]
    for level, m in enumerate(maps):
        expected = (maps[0].shape[1] >> level, maps[0].shape[2] >> level)
        if m.ndim != 3 or m.shape[1:] != expected or m.shape[1] % side or m.shape[2] % side:
            raise ValueError(f"GradCAT: level {level} has a grid {m.shape[1:]}, expected {expected} tiled by "
                             f"{side}x{side} blocks (each level halves the one below; learned tokens have no grid)")
        if image_shape[0] % m.shape[1] or image_shape[1] % m.shape[2]:
            raise ValueError(f"GradCAT: level {level}'s grid {m.shape[1:]} does not divide the image {image_shape}")
    if child_scores == "parent" and side % 2:
        raise ValueError(f"GradCAT: child_scores='parent' splits {side}x{side} blocks into quadrants; use 'child'")
    top = len(maps) - 1
    results = []
    for b in range(maps[0].shape[0]):
        means = _block_means(maps[top][b], side)
        row, col = np.unravel_index(np.argmax(means), means.shape)
        nodes = [(top, row, col, means[row, col])]
        for level in range(top, 0, -1):
            if child_scores == "parent":
                region = maps[level][b, row * side:(row + 1) * side, col * side:(col + 1) * side]
                children = _block_means(region, side // 2)
            else:
                region = maps[level - 1][b, 2 * row * side:(2 * row + 2) * side, 2 * col * side:(2 * col + 2) * side]
                children = _block_means(region, side)
            i, j = np.unravel_index(np.argmax(children), (2, 2))
            row, col = 2 * row + i, 2 * col + j
            nodes.append((level - 1, row, col, children[i, j]))
        boxes, blocks = [], []
        for level, r, c, _ in nodes:
            scale = image_shape[0] // maps[level].shape[1]
            boxes.append([r * side * scale, c * side * scale, (r + 1) * side * scale, (c + 1) * side * scale])
            blocks.append(r * (maps[level].shape[2] // side) + c)
        results.append(Traversal(target=int(targets[b]), levels=np.array([n[0] for n in nodes]),
                                 blocks=np.array(blocks), scores=np.array([n[3] for n in nodes]),
                                 boxes=np.array(boxes, np.int64)))
    return results


def gradcat(model, variables, images, targets=None, *, objective: str = "logit", child_scores: str = "parent",
            top_features: str = "normalized"):
    """(logits `[b, classes]` as NumPy, [Traversal per image]) of NesT `model` on images `[b, h, w, c]`."""
    @jax.jit
    def run(variables, images, targets):
        logits, chosen, features, grads = level_features_and_gradients(model, variables, images, targets, objective,
                                                                       top_features)
        return logits, chosen, score_maps(features, grads)

    logits, chosen, maps = run(variables, images, targets)
    return np.asarray(logits), traverse(maps, images.shape[1:3], np.asarray(chosen), child_scores)


def class_activation_maps(feature_map, head_kernel, head_bias, classes) -> np.ndarray:
    """CAM: `feature_map` `[b, h, w, c]` @ head_kernel `[c, K]` + head_bias `[K]`, taken at `classes` `[b]`
    -> `[b, h, w]`; its mean over positions is the logit of that class."""
    logits = np.einsum("bhwc,ck->bhwk", np.asarray(feature_map, np.float64), np.asarray(head_kernel, np.float64))
    logits += np.asarray(head_bias, np.float64)
    return np.take_along_axis(logits, np.asarray(classes)[:, None, None, None], axis=-1)[..., 0]


def draw_traversal(ax, image: np.ndarray, traversal: Traversal, title: str = "") -> None:
    """Draws `image` (float `[h, w, 3]` in [0, 1]) on the matplotlib axes `ax` with the traversal as nested
    boxes, each labelled with its level and score (top level: widest line)."""
    import matplotlib.patches as patches  # pylint: disable=g-import-not-at-top  (plotting only)

    ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
    count = len(traversal.levels)
    colors = ["#e41a1c", "#ff7f00", "#ffff33", "#4daf4a", "#377eb8", "#984ea3"]
    for k, (level, score, (top, left, bottom, right)) in enumerate(zip(traversal.levels, traversal.scores,
                                                                      traversal.boxes)):
        color = colors[k % len(colors)]
        ax.add_patch(patches.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                       edgecolor=color, linewidth=1.0 + 1.5 * (count - 1 - k)))
        ax.text(left, top - 0.5, f"L{level} {score:.2g}", color=color, fontsize=6, va="bottom")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
