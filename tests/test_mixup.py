"""Mixup / CutMix (tasks/mixup.py) and their hook in the train step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from helpers import validate
from tokenlearner_jax import models, recipes
from tokenlearner_jax.tasks import classification, losses, mixup
from tokenlearner_jax.train import trainer


def mix_config(**overrides):
    values = dict(mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5, prob=1.0)
    values.update(overrides)
    return ml_collections.FrozenConfigDict(values)  # hashable: a static argument of the jitted mix


def batch(size=6, height=8, width=10, classes=4):
    rng = np.random.RandomState(0)
    images = jnp.asarray(rng.rand(size, height, width, 3), jnp.float32)
    targets = losses.targets_from_labels(jnp.asarray(rng.randint(0, classes, size)), classes, 0.1)
    return images, targets


mix = jax.jit(mixup.mix_batch, static_argnums=3)


def test_mixup_blends_each_example_with_its_mirror_in_the_batch():
    images, targets = batch()
    for seed in range(5):
        mixed, mixed_targets, lam = mix(jax.random.key(seed), images, targets, mix_config(mixup_alpha=0.8))
        lam = float(lam)
        assert 0.0 <= lam <= 1.0
        np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[::-1], atol=1e-6)
        np.testing.assert_allclose(mixed_targets, lam * targets + (1 - lam) * targets[::-1], atol=1e-6)
        np.testing.assert_allclose(np.sum(mixed_targets, -1), 1.0, atol=1e-6)


def test_cutmix_pastes_one_box_from_the_mirror_and_lam_is_the_uncovered_area():
    images, targets = batch()
    lams = []
    for seed in range(8):
        mixed, mixed_targets, lam = mix(jax.random.key(seed), images, targets, mix_config(cutmix_alpha=1.0))
        mixed, lam = np.asarray(mixed), float(lam)
        from_mirror = np.all(mixed == np.asarray(images[::-1]), axis=-1) & ~np.all(mixed == np.asarray(images), -1)
        from_self = np.all(mixed == np.asarray(images), axis=-1)
        assert np.all(from_mirror | from_self)  # every pixel comes whole from one of the two
        box = from_mirror[0]
        assert np.all(from_mirror == box)  # the same box for every example
        if box.any():  # a rectangle
            rows, cols = np.where(box.any(1))[0], np.where(box.any(0))[0]
            assert box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        assert lam == pytest.approx(1.0 - box.mean(), abs=1e-6)
        np.testing.assert_allclose(mixed_targets, lam * targets + (1 - lam) * targets[::-1], atol=1e-6)
        lams.append(lam)
    assert len(set(lams)) > 4  # boxes of different sizes


def test_cutmix_of_videos_pastes_the_same_box_into_every_frame():
    images, targets = batch(height=8, width=10)
    frames = jnp.stack([images, images + 1.0, images + 2.0], axis=1)  # [batch, 3 frames, 8, 10, 3]
    for seed in range(4):
        mixed, _, lam = mix(jax.random.key(seed), frames, targets, mix_config(cutmix_alpha=1.0))
        image_mixed, _, image_lam = mix(jax.random.key(seed), images, targets, mix_config(cutmix_alpha=1.0))
        assert float(lam) == float(image_lam)
        for t in range(3):  # each frame is cut exactly as a single image would be
            np.testing.assert_array_equal(np.asarray(mixed[:, t]), np.asarray(image_mixed) + t)


def test_both_switch_between_the_two_and_prob_leaves_batches_alone():
    images, targets = batch()
    kinds = set()
    for seed in range(20):
        mixed, _, lam = mix(jax.random.key(seed), images, targets,
                            mix_config(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.7))
        mixed, lam = np.asarray(mixed), float(lam)
        if lam == 1.0:
            kinds.add("none")
            np.testing.assert_array_equal(mixed, np.asarray(images))
        elif np.allclose(mixed, lam * np.asarray(images) + (1 - lam) * np.asarray(images[::-1]), atol=1e-6):
            kinds.add("mixup")
        else:
            kinds.add("cutmix")
    assert kinds == {"none", "mixup", "cutmix"}
    _, mixed_targets, lam = mix(jax.random.key(0), images, targets, mix_config(mixup_alpha=0.8, prob=0.0))
    assert float(lam) == 1.0 and np.array_equal(mixed_targets, targets)


def test_the_same_key_mixes_the_same_way():
    images, targets = batch()
    config = mix_config(mixup_alpha=0.8, cutmix_alpha=1.0)
    a, b = mix(jax.random.key(3), images, targets, config), mix(jax.random.key(3), images, targets, config)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    c = mix(jax.random.key(4), images, targets, config)
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))


def test_enabled():
    assert not mixup.enabled(mix_config())
    assert not mixup.enabled(mix_config(mixup_alpha=0.8, prob=0.0))
    assert mixup.enabled(mix_config(cutmix_alpha=1.0))


def tiny_trainer_config(**mixup_overrides):
    config = recipes.base()
    config.dataset.image_size = 16
    config.model = models.config("poolformer", variant="S12", num_classes=10)
    config.model.depths, config.model.dims = (1, 1), (8, 16)
    config.model.drop_path_rate = 0.0  # a deterministic forward pass, so the test can recompute the loss
    config.batch_size = 8
    config.num_train_steps = 2
    config.label_smoothing = 0.1
    config.mixup.update(mixup_overrides)
    return config


def test_train_step_mixes_with_a_key_derived_from_the_step():
    """The train step's loss is the loss on the batch mixed with the key fold_in(fold_in(seed key, step),
    MIXUP_KEY): a function of the step counter only, so a resumed run mixes as an uninterrupted one."""
    config = tiny_trainer_config(mixup_alpha=0.8, cutmix_alpha=1.0)
    validate(config)
    setup = trainer.Setup(config, trainer.resolve_dataset(config), total_steps=2)
    rng = np.random.RandomState(0)
    raw = {"image": rng.randn(8, 16, 16, 3).astype(np.float32), "label": rng.randint(0, 10, 8).astype(np.int32)}
    with setup.context():
        params = jax.tree.map(np.asarray, setup.init_state().params)
        step_losses = [float(setup.train_step(setup.init_state(), setup.to_global(raw))[1]["train/loss"])
                       for _ in range(2)]
    assert step_losses[0] == step_losses[1]

    def loss_on(images, targets):
        logits = setup.task.model.apply({"params": params}, images, train=True)
        return float(jnp.mean(losses.per_example_loss("softmax_xent", logits, targets)))

    targets = losses.targets_from_labels(jnp.asarray(raw["label"]), 10, 0.1)
    step_key = jax.random.fold_in(jax.random.key(config.seed), 0)
    mixed_images, mixed_targets, lam = mixup.mix_batch(jax.random.fold_in(step_key, classification.MIXUP_KEY),
                                                       jnp.asarray(raw["image"]), targets, config.mixup)
    assert float(lam) < 1.0
    assert step_losses[0] == pytest.approx(loss_on(mixed_images, mixed_targets), abs=1e-5)
    assert step_losses[0] != pytest.approx(loss_on(jnp.asarray(raw["image"]), targets), abs=1e-3)


@pytest.mark.parametrize("field, value", [("mixup_alpha", -0.1), ("prob", 1.5), ("switch_prob", -0.5)])
def test_bad_mixup_fields_are_rejected(field, value):
    config = tiny_trainer_config()
    config.mixup[field] = value
    with pytest.raises(ValueError, match=f"config.mixup.{field}"):
        validate(config)
