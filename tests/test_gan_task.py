"""The 'gan' task without the training loop: its state under jax.eval_shape and jit, a few hinge-loss
steps that teach the discriminator, the generator EMA's recurrence, determinism given the key, the Fréchet
distance of the eval outputs, the classifier feature network read back from a checkpoint, and config
checks (the loop's validation included)."""

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax.core import meta

from tokenlearner_jax import data, models, recipes
from tokenlearner_jax.evaluate import frechet
from tokenlearner_jax.tasks import base, gan
from tokenlearner_jax.train import state_init, trainer

SIZE = 16


def pooled_pixels(images):
    """A fixed feature map for the plumbing tests: 2x2 average-pooled pixels, 12 values per image."""
    b = images.shape[0]
    return images.reshape(b, 2, SIZE // 2, 2, SIZE // 2, 3).mean(axis=(2, 4)).reshape(b, 12)


POOLED = frechet.FeatureNetwork(name="2x2 average-pooled pixels", dim=12, apply=pooled_pixels)


def tiny_config(generator="gennest", **gan_overrides):
    config = recipes.base("gan")
    config.dataset = recipes.dataset(name="digits", image_size=SIZE)
    config.batch_size = config.eval_batch_size = 8
    if generator == "gennest":
        config.gan.generator.update(dims=(32, 16, 16), num_heads=(2, 1, 1), depths=(1, 1, 1), block_side=4,
                                    patch_size=1, latent_dim=16)
    else:
        config.gan.generator = models.config("sagan_generator", latent_dim=16, channels=8, channel_multipliers=(2, 1),
                                             attention_resolution=0)
    config.gan.discriminator.update(channels=16, channel_multipliers=(1, 2, 2), attention_resolution=8)
    config.gan.update(gan_overrides)
    return config


INFO = data.DatasetInfo(name="digits", num_classes=10, image_shape=(SIZE, SIZE, 3), num_train=64, num_eval=16,
                        multi_label=False)


def make_task(config, total_steps=100):
    return gan.GanTask(config, INFO, total_steps, feature_network=POOLED)


def real_batch(count=8, seed=0):
    """Smooth images in [-1, 1]: a colour per image plus a gentle horizontal ramp."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(-0.8, 0.8, (count, 1, 1, 3))
    ramp = np.linspace(-0.2, 0.2, SIZE)[None, None, :, None]
    images = np.broadcast_to(colours + ramp, (count, SIZE, SIZE, 3))
    return {"image": jnp.asarray(np.clip(images, -1, 1), jnp.float32),
            "label": jnp.zeros(count, jnp.int32)}


@functools.cache
def steps_of(generator, count, seed=0, discriminator_steps=1):
    """(task, states after 0..count steps, metrics of each step) on one fixed real batch."""
    task = make_task(tiny_config(generator, discriminator_steps=discriminator_steps))
    state = meta.unbox(jax.jit(task.init_state)(jax.random.key(seed)))
    step = jax.jit(task.train_step)
    states, metrics = [state], []
    for k in range(count):
        state, m = step(state, real_batch(), jax.random.fold_in(jax.random.key(seed + 100), k))
        states.append(state)
        metrics.append(jax.tree.map(float, m))
    return task, states, metrics


def test_state_under_eval_shape_matches_the_jitted_initialisation():
    task = make_task(tiny_config())
    abstract = jax.eval_shape(task.init_state, jax.random.key(0))
    state = jax.jit(task.init_state)(jax.random.key(0))
    assert jax.tree.structure(abstract) == jax.tree.structure(state)
    for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(state)):
        assert a.shape == s.shape and a.dtype == s.dtype
    # The trainer's initialisation, random draws batched across both trees, gives the same state.
    batched, _ = state_init.trace(task.init_state, jax.random.key(0))
    for a, s in zip(jax.tree.leaves(jax.jit(batched)(jax.random.key(0))), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, s)
    state = meta.unbox(state)
    assert int(state.step) == 0
    # The spectral-norm estimates of the discriminator are state; the EMA starts at the generator.
    assert "batch_stats" in state.discriminator_state and state.generator_state == {}
    for e, p in zip(jax.tree.leaves(state.generator_ema), jax.tree.leaves(state.generator_params)):
        np.testing.assert_array_equal(e, p)
    report = task.report(abstract)
    assert report["model/generator_params"] > 0 and report["model/discriminator_params"] > 0


def test_a_few_steps_teach_the_discriminator_and_stay_finite():
    _, states, metrics = steps_of("gennest", 12)
    d_losses = [m["train/d_loss"] for m in metrics]
    assert all(np.isfinite([m[k] for m in metrics for k in m]).tolist())
    assert np.mean(d_losses[-3:]) < d_losses[0] - 0.1, d_losses
    assert metrics[-1]["train/d_real"] > metrics[-1]["train/d_fake"]
    assert int(states[-1].step) == 12 and bool(base.all_finite([states[-1]]))
    assert metrics[0]["train/g_learning_rate"] == pytest.approx(1e-4)
    assert metrics[0]["train/d_learning_rate"] == pytest.approx(4e-4)


def test_the_generator_ema_follows_the_recurrence():
    _, states, _ = steps_of("gennest", 12)
    for step in (0, 1, 11):
        decay = min(0.999, (1 + step) / (10 + step))  # ema_dynamic_decay
        for ema, previous, params in zip(jax.tree.leaves(states[step + 1].generator_ema),
                                         jax.tree.leaves(states[step].generator_ema),
                                         jax.tree.leaves(states[step + 1].generator_params)):
            np.testing.assert_allclose(ema, decay * np.asarray(previous) + (1 - decay) * np.asarray(params),
                                       rtol=1e-6, atol=1e-7)
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(states[1].generator_params),
                                                  jax.tree.leaves(states[0].generator_params))]
    assert any(moved)


def test_steps_are_deterministic_given_the_key():
    task, states, _ = steps_of("gennest", 12)
    again = jax.jit(task.train_step)(states[0], real_batch(), jax.random.fold_in(jax.random.key(100), 0))[0]
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(states[1])):
        np.testing.assert_array_equal(a, b)
    other = jax.jit(task.train_step)(states[0], real_batch(), jax.random.key(7))[0]
    assert not np.array_equal(other.discriminator_params["block_0"]["conv_0"]["conv"]["kernel"],
                              states[1].discriminator_params["block_0"]["conv_0"]["conv"]["kernel"])


def test_batchnorm_generator_and_two_discriminator_steps():
    _, states, metrics = steps_of("sagan_generator", 2, discriminator_steps=2)
    assert all(np.isfinite(list(m.values())).all() for m in metrics)
    before, after = (s.generator_state["batch_stats"]["output_norm"]["mean"] for s in (states[0], states[2]))
    assert not np.allclose(before, after)  # the generator update moved the running statistics
    task = make_task(tiny_config(discriminator_steps=2))
    state = meta.unbox(jax.jit(task.init_state)(jax.random.key(0)))
    with pytest.raises(ValueError, match="discriminator_steps=2"):
        task.train_step(state, real_batch(count=5), jax.random.key(0))


def test_eval_outputs_reduce_to_the_frechet_distance_of_the_unmasked_examples():
    task, states, _ = steps_of("gennest", 12)
    step = jax.jit(task.eval_step)
    batches = [dict(real_batch(16, seed=s), mask=jnp.asarray([1.0] * 12 + [0.0] * 4)) for s in (1, 2)]
    outputs = [jax.tree.map(np.asarray, step(states[-1], b)) for b in batches]
    again = jax.tree.map(np.asarray, step(states[-1], batches[0]))
    np.testing.assert_array_equal(again["generated"], outputs[0]["generated"])  # same latents every eval
    assert not np.allclose(outputs[0]["generated"], outputs[1]["generated"])  # other batch, other latents
    np.testing.assert_allclose(outputs[0]["real"], pooled_pixels(np.asarray(batches[0]["image"])), rtol=1e-6)
    accumulator = task.eval_accumulator()
    for o in outputs:
        accumulator.add(o)
    real = np.concatenate([o["real"][:12] for o in outputs])
    generated = np.concatenate([o["generated"][:12] for o in outputs])
    expected = frechet.frechet_distance(*frechet.statistics(real), *frechet.statistics(generated))
    result = accumulator.result()
    assert result["fd_examples"] == 24 and result["fd"] == pytest.approx(expected, rel=1e-6)


def test_the_classifier_feature_network_reads_a_checkpoint_and_gives_the_models_pre_logits(tmp_path):
    model_config = models.config("nest", variant="T", num_classes=3, dims=(16, 24), num_heads=(2, 2), depths=(1, 1),
                                 patch_size=2)
    model = models.build(model_config)
    variables = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False))()
    params = meta.unbox(variables["params"])
    with ocp.CheckpointManager(str(tmp_path / "checkpoints"), item_names=("state",)) as manager:
        manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave({"params": params, "model_state": {}})))
        manager.wait_until_finished()
    with open(tmp_path / "config.json", "w", encoding="utf-8") as f:
        json.dump({"model": model_config.to_dict(), "dataset": {"normalize": "unit", "image_size": 8}}, f)

    network = gan.feature_network_from_config(ml_collections.ConfigDict(dict(network="classifier", path=str(tmp_path))))
    assert network.dim == 24 and "step 7" in network.name and "nest" in network.name
    images = jax.random.uniform(jax.random.key(1), (4, 8, 8, 3), minval=-1.0, maxval=1.0)
    _, state = jax.jit(lambda x: model.apply({"params": params}, x, train=False, mutable=["intermediates"]))(
        (images + 1.0) / 2.0)  # the classifier's 'unit' normalisation
    apply = jax.jit(network.apply)
    np.testing.assert_allclose(apply(images), state["intermediates"]["pre_logits"][0], atol=1e-5)
    assert apply(jnp.zeros((2, 16, 16, 3))).shape == (2, 24)  # other sizes are resized to the classifier's
    with pytest.raises(FileNotFoundError, match="no config.json"):
        gan.classifier_network(str(tmp_path / "checkpoints"))
    with pytest.raises(ValueError, match="config.gan.fd.path is empty"):
        gan.feature_network_from_config(ml_collections.ConfigDict(dict(network="classifier", path="")))


def test_config_errors_name_the_field():
    trainer.validate(tiny_config())  # everything main.py checks before reading data
    config = tiny_config()
    config.dataset.normalize = "unit"
    with pytest.raises(ValueError, match="config.dataset.normalize='unit'"):
        gan.GanTask.validate(config)
    for overrides, message in ((dict(discriminator_steps=0), "config.gan.discriminator_steps=0"),
                               (dict(ema_decay=1.0), "config.gan.ema_decay=1.0")):
        with pytest.raises(ValueError, match=message):
            gan.GanTask.validate(tiny_config(**overrides))
    config = tiny_config()
    config.gan.generator_optimizer.name = "lamb"
    with pytest.raises(ValueError, match="config.gan.generator_optimizer.name='lamb'"):
        gan.GanTask.validate(config)
    config = tiny_config()
    config.gan.generator.block_side = 8
    with pytest.raises(ValueError, match=r"makes images \(32, 32, 3\), but the dataset's are \(16, 16, 3\)"):
        gan.GanTask.validate(config)
    config = tiny_config()
    config.gan.discriminator.channel_multipliers = (1, 1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="config.gan.discriminator does not take"):
        gan.GanTask.validate(config)
    with pytest.raises(NotImplementedError, match="few-shot"):
        make_task(tiny_config()).features({}, None)
    assert base.get("gan") is gan.GanTask
