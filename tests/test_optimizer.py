"""Schedules, weight-decay masks, losses and gradient accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenlearner_jax import data, models, recipes
from tokenlearner_jax.tasks import losses, optimizer
from tokenlearner_jax.train import trainer


def opt_config(**overrides):
    config = recipes.base().optimizer
    config.update(overrides)
    return config


def test_warmup_then_cosine_linear_and_constant_decay():
    cosine = optimizer.learning_rate_schedule(opt_config(learning_rate=1.0, warmup_steps=10, decay="cosine"), 110)
    assert float(cosine(0)) == 0.0 and float(cosine(5)) == pytest.approx(0.5) and float(cosine(10)) == 1.0
    assert float(cosine(60)) == pytest.approx(0.5, abs=1e-6) and float(cosine(110)) == pytest.approx(0.0, abs=1e-6)
    linear = optimizer.learning_rate_schedule(opt_config(learning_rate=1.0, warmup_steps=10, decay="linear"), 110)
    assert float(linear(60)) == pytest.approx(0.5) and float(linear(110)) == pytest.approx(0.0)
    constant = optimizer.learning_rate_schedule(opt_config(learning_rate=0.3, warmup_steps=0, decay="constant"), 50)
    assert float(constant(0)) == float(constant(49)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="config.optimizer.decay"):
        optimizer.learning_rate_schedule(opt_config(decay="step"), 10)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e39, -1e-3])
def test_a_learning_rate_that_is_not_a_finite_float32_is_refused(value):
    with pytest.raises(ValueError, match="config.optimizer.learning_rate"):
        optimizer.validate(opt_config(learning_rate=value))
    optimizer.validate(opt_config(learning_rate=1e38))  # large, but finite in float32


def test_weight_decay_skips_biases_norms_and_position_embeddings():
    params = {"stem": {"embedding": {"kernel": 1, "bias": 1}}, "cls": 1,
              "posembed_input": {"pos_embedding": 1}, "encoder_norm": {"scale": 1, "bias": 1},
              "encoderblock_0": {"MlpBlock_3": {"Dense_0": {"kernel": 1, "bias": 1}}}, "head": {"kernel": 1}}
    mask = optimizer.weight_decay_mask(params, recipes.DEFAULT_WEIGHT_DECAY_EXCLUDE)
    decayed = sorted("/".join(str(p.key) for p in path) for path, v in jax.tree_util.tree_leaves_with_path(mask) if v)
    assert decayed == ["encoderblock_0/MlpBlock_3/Dense_0/kernel", "head/kernel", "stem/embedding/kernel"]


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_each_optimizer_reduces_a_quadratic(name):
    tx, _ = optimizer.make_optimizer(opt_config(name=name, learning_rate=0.1, weight_decay=0.0, decay="constant"), 100)
    params = {"w": jnp.array([3.0, -2.0])}
    state = tx.init(params)
    for _ in range(50):
        grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        updates, state = tx.update(grads, state, params)
        params = jax.tree.map(jnp.add, params, updates)
    assert float(jnp.sum(params["w"] ** 2)) < 0.5


def test_clipping_bounds_the_update_of_a_huge_gradient():
    tx, _ = optimizer.make_optimizer(opt_config(name="sgd", momentum=0.0, learning_rate=1.0, weight_decay=0.0,
                                                decay="constant", grad_clip_norm=1.0), 10)
    params = {"w": jnp.zeros(4)}
    updates, _ = tx.update({"w": jnp.full(4, 100.0)}, tx.init(params), params)
    assert float(jnp.linalg.norm(updates["w"])) == pytest.approx(1.0, rel=1e-5)


def test_label_smoothing_and_losses():
    targets = losses.targets_from_labels(jnp.array([2]), 4, label_smoothing=0.2)
    np.testing.assert_allclose(np.asarray(targets), [[0.05, 0.05, 0.85, 0.05]], rtol=1e-6)
    logits = jnp.array([[1.0, 2.0, 3.0, 0.5]])
    expected = -np.sum(np.asarray(targets) * np.asarray(jax.nn.log_softmax(logits)))
    assert float(losses.per_example_loss("softmax_xent", logits, targets)[0]) == pytest.approx(expected, rel=1e-6)
    multi_hot = np.array([[0.0, 1.0, 1.0, 0.0]])
    p = 1 / (1 + np.exp(-np.asarray(logits)))
    expected = -np.sum(multi_hot * np.log(p) + (1 - multi_hot) * np.log(1 - p))
    assert float(losses.per_example_loss("sigmoid_xent", logits, multi_hot)[0]) == pytest.approx(expected, rel=1e-5)


def test_gradient_accumulation_equals_one_big_batch():
    def one_step(accum):
        config = recipes.base()
        config.model = models.config("vit", variant="S/4", num_classes=10, classifier="gap", token_learner=dict(enabled=True, location=1))
        config.model.width, config.model.depth, config.model.num_heads, config.model.mlp_dim = 16, 2, 2, 32
        config.dataset.image_size = 16
        config.batch_size, config.grad_accum_steps = 16, accum
        config.optimizer.name, config.optimizer.momentum, config.optimizer.warmup_steps = "sgd", 0.0, 0
        config.optimizer.learning_rate = 0.5
        setup = trainer.Setup(config, trainer.resolve_dataset(config), total_steps=10, devices=jax.devices()[:1])
        batch = next(data.train_iterator(config.dataset, global_batch_size=16, seed=0))
        with setup.context():
            state, metrics, _ = setup.train_step(setup.init_state(), setup.to_global(batch))
        return jax.tree.map(np.asarray, state.params), float(metrics["train/loss"])

    (full, full_loss), (accumulated, accumulated_loss) = one_step(1), one_step(4)
    assert accumulated_loss == pytest.approx(full_loss, rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), full, accumulated)
