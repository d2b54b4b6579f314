"""GradCAT: hand-built trees whose class logit depends on a single leaf block (the traversal must end there,
for either class, objective and way of scoring children), the level gradients of a real NesT against an
analytic head gradient and finite differences, nested boxes in image pixels, and CAM against the logits."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from flax.core import meta

from tokenlearner_jax import models
from tokenlearner_jax.evaluate import gradcat

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SIDE = 2  # block side of the hand-built tree: grids 8x8 (16 leaf blocks), 4x4 (4 blocks), 2x2 (the root)


class Level(nn.Module):
    """A level of the hand-built tree: [2x2 average pooling], then each channel multiplied by a mask."""

    pool: bool
    mask: np.ndarray  # [h, w, channels]

    def __call__(self, x, train=False):
        if self.pool:
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return x * self.mask


class HandBuiltTree(nn.Module):
    """Channel c carries class c: level 0 keeps only the pixels of leaf block leaves[c] in channel c, so the
    logit of class c (the sum of the top grid's channel c) depends on that one leaf block alone."""

    leaves: tuple

    @nn.compact
    def __call__(self, images, train=False):
        mask = np.zeros((8, 8, len(self.leaves)), np.float32)
        for c, leaf in enumerate(self.leaves):
            r, col = divmod(leaf, 8 // SIDE)
            mask[r * SIDE:(r + 1) * SIDE, col * SIDE:(col + 1) * SIDE, c] = 1.0
        x = Level(False, mask, name="level_0")(images)
        x = Level(True, np.ones((4, 4, len(self.leaves)), np.float32), name="level_1")(x)
        x = Level(True, np.ones((2, 2, len(self.leaves)), np.float32), name="level_2")(x)
        return jnp.sum(x, axis=(1, 2))


def leaf_box(leaf):
    r, c = divmod(leaf, 4)
    return [r * SIDE, c * SIDE, (r + 1) * SIDE, (c + 1) * SIDE]


def positive_images(batch, channels, seed=0):
    return jax.random.uniform(jax.random.key(seed), (batch, 8, 8, channels), minval=0.5, maxval=1.5)


@pytest.mark.parametrize("child_scores", gradcat.CHILD_SCORES)
@pytest.mark.parametrize("leaf", range(16))
def test_the_traversal_ends_at_the_only_leaf_block_the_logit_depends_on(leaf, child_scores):
    model = HandBuiltTree((leaf,))
    _, (path,) = gradcat.gradcat(model, {}, positive_images(1, 1), child_scores=child_scores)
    assert path.target == 0
    np.testing.assert_array_equal(path.levels, [2, 1, 0])
    assert path.blocks[-1] == leaf
    np.testing.assert_array_equal(path.boxes[-1], leaf_box(leaf))
    # The level-1 node is the 2x2 group of leaves holding it; the root is the whole image.
    r, c = divmod(leaf, 4)
    assert path.blocks[1] == (r // 2) * 2 + c // 2
    np.testing.assert_array_equal(path.boxes[0], [0, 0, 8, 8])
    assert (path.scores > 0).all()


@pytest.mark.parametrize("objective", gradcat.OBJECTIVES)
@pytest.mark.parametrize("child_scores", gradcat.CHILD_SCORES)
def test_each_class_leads_to_its_own_leaf(objective, child_scores):
    leaves = (1, 14)  # in different quadrants of the root, so the log-softmax's negative share stays apart
    model = HandBuiltTree(leaves)
    images = positive_images(2, 2, seed=1)
    logits, paths = gradcat.gradcat(model, {}, images, jnp.array([0, 1]), objective=objective,
                                    child_scores=child_scores)
    assert [p.blocks[-1] for p in paths] == list(leaves) and [p.target for p in paths] == [0, 1]
    # Without targets the predicted class is traced.
    _, predicted = gradcat.gradcat(model, {}, images, objective=objective, child_scores=child_scores)
    for logit_row, path in zip(logits, predicted):
        assert path.target == int(np.argmax(logit_row)) and path.blocks[-1] == leaves[path.target]


@functools.cache
def tiny_nest():
    """A 3-level NesT on 16x16 images: patches of 2, grids 8x8, 4x4, 2x2 (block side 2)."""
    model = models.build(models.config("nest", variant="T", num_classes=5, dims=(8, 16, 16), num_heads=(2, 2, 2),
                                       depths=(1, 1, 1), patch_size=2, drop_path_rate=0.0))
    variables = meta.unbox(jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False))())
    return model, variables


@functools.cache
def nest_run(top_features="level"):
    """(images, targets, level_features_and_gradients' result per objective) of the tiny NesT."""
    model, variables = tiny_nest()
    images = jax.random.normal(jax.random.key(2), (3, 16, 16, 3))
    targets = jnp.array([0, 3, 4])
    run = jax.jit(functools.partial(gradcat.level_features_and_gradients, model, top_features=top_features),
                  static_argnames="objective")
    return images, targets, {o: run(variables, images, targets, objective=o) for o in gradcat.OBJECTIVES}


def test_the_raw_top_level_scores_nothing_and_the_normalised_one_is_the_cam():
    """A LayerNorm follows NesT's top level, so gradient x activation of the raw top grid vanishes at every
    position; after the norm it is (CAM - head bias) / positions, while the lower levels' maps are the same."""
    model, variables = tiny_nest()
    images, targets, raw = nest_run("level")
    _, _, normalized = nest_run("normalized")
    raw_maps = gradcat.score_maps(*raw["logit"][2:])
    maps = gradcat.score_maps(*normalized["logit"][2:])
    assert np.abs(raw_maps[2]).max() < 1e-4 * np.abs(raw_maps[0]).max()
    for level in (0, 1):
        np.testing.assert_allclose(maps[level], raw_maps[level], rtol=1e-5, atol=1e-7)
    _, state = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(variables, images)
    feature_map = state["intermediates"]["feature_map"][0]
    np.testing.assert_allclose(normalized["logit"][2][2], feature_map, atol=1e-6)  # the head_norm output
    head = variables["params"]["head"]
    cams = gradcat.class_activation_maps(feature_map, head["kernel"], head["bias"], targets)
    np.testing.assert_allclose(np.asarray(maps[2]) * 4 + np.asarray(head["bias"])[targets][:, None, None], cams,
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="top_features='pre'"):
        gradcat.level_features_and_gradients(model, variables, images, top_features="pre")


def test_nest_level_gradients_match_the_head_analytically_and_finite_differences():
    model, variables = tiny_nest()
    images, targets, results = nest_run()
    logits, chosen, features, grads = results["logit"]
    assert [f.shape for f in features] == [(3, 8, 8, 8), (3, 4, 4, 16), (3, 2, 2, 16)]
    np.testing.assert_array_equal(chosen, targets)
    np.testing.assert_allclose(logits, jax.jit(lambda v, x: model.apply(v, x))(variables, images), atol=1e-5)

    params = variables["params"]

    def head(top):  # the model after its last level: LayerNorm -> mean -> Dense
        norm = nn.LayerNorm(epsilon=1e-6).apply({"params": params["head_norm"]}, top)
        return jnp.mean(norm, axis=(1, 2)) @ params["head"]["kernel"] + params["head"]["bias"]

    # Gradient of every class's logit with respect to the top grid: [classes, batch, 2, 2, width].
    per_class = jax.jit(lambda a: jnp.stack([jax.grad(lambda a, k=k: jnp.sum(head(a)[:, k]))(a) for k in range(5)]))(
        features[2])
    batch = np.arange(3)
    np.testing.assert_allclose(grads[2], per_class[targets, batch], rtol=1e-4, atol=1e-6)
    # log_softmax: the target logit's gradient minus the probability-weighted gradients of every logit.
    probabilities = jax.nn.softmax(logits)
    expected = per_class[targets, batch] - jnp.einsum("bk,kbhwc->bhwc", probabilities, per_class)
    np.testing.assert_allclose(results["log_softmax"][3][2], expected, rtol=1e-4, atol=1e-6)

    # Level 0 by central differences through the whole model (a delta added to one feature of image 1).
    eps, index = 1e-2, (1, 5, 2, 3)

    @jax.jit
    def logit_with(delta):
        zeros = {f"level_{i}": jnp.zeros_like(f) for i, f in enumerate(features)}
        zeros["level_0"] = zeros["level_0"].at[index].set(delta)
        return gradcat._apply_with_levels(model, variables, images, zeros)[0][1, 3]

    difference = (logit_with(eps) - logit_with(-eps)) / (2 * eps)
    np.testing.assert_allclose(difference, grads[0][index], rtol=2e-2, atol=1e-4)


def test_nest_traversal_boxes_are_nested_halves_in_image_pixels():
    images, targets, results = nest_run()
    _, chosen, features, grads = results["logit"]
    for child_scores in gradcat.CHILD_SCORES:
        paths = gradcat.traverse(gradcat.score_maps(features, grads), (16, 16), chosen, child_scores)
        for target, path in zip(targets, paths):
            assert path.target == int(target)
            np.testing.assert_array_equal(path.boxes[0], [0, 0, 16, 16])  # top grid 2x2 = one block of side 2
            for parent, child in zip(path.boxes[:-1], path.boxes[1:]):
                assert (child[:2] >= parent[:2]).all() and (child[2:] <= parent[2:]).all()
                assert child[2] - child[0] == (parent[2] - parent[0]) // 2
            # Leaf: a 2x2 block of 2x2-pixel patches, the block index matching its place among 4x4 blocks.
            top, left = path.boxes[-1][:2]
            assert path.boxes[-1][2] - top == 4 and path.blocks[-1] == (top // 4) * 4 + left // 4


def test_cam_mean_over_positions_is_the_logit_of_the_class():
    model, variables = tiny_nest()
    images = jax.random.normal(jax.random.key(4), (3, 16, 16, 3))
    logits, state = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(variables, images)
    classes = np.array([2, 0, 4])
    params = variables["params"]
    cams = gradcat.class_activation_maps(state["intermediates"]["feature_map"][0], params["head"]["kernel"],
                                         params["head"]["bias"], classes)
    assert cams.shape == (3, 2, 2)
    np.testing.assert_allclose(cams.mean(axis=(1, 2)), np.asarray(logits)[np.arange(3), classes], rtol=1e-5,
                               atol=1e-5)


def test_grids_that_do_not_form_a_tree_are_refused():
    with pytest.raises(ValueError, match="level 1 has a grid"):
        gradcat.traverse([np.zeros((1, 8, 8)), np.zeros((1, 2, 2))], (8, 8), [0])
    with pytest.raises(ValueError, match="child_scores='parent' splits 3x3"):
        gradcat.traverse([np.zeros((1, 6, 6)), np.zeros((1, 3, 3))], (6, 6), [0])
    with pytest.raises(ValueError, match="objective='loss'"):
        gradcat.level_features_and_gradients(HandBuiltTree((0,)), {}, positive_images(1, 1), objective="loss")


def test_drawing_puts_one_box_per_level():
    _, (path,) = gradcat.gradcat(HandBuiltTree((6,)), {}, positive_images(1, 1))
    fig, ax = plt.subplots()
    gradcat.draw_traversal(ax, np.zeros((8, 8, 3)), path, title="6")
    assert len(ax.patches) == 3 and len(ax.texts) == 3 and ax.texts[-1].get_text().startswith("L0 ")
    plt.close(fig)
