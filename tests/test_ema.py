"""Exponential moving average of the parameters in the shared trainer (config.ema)."""


import jax
import numpy as np
import pytest

from helpers import TINY, load_config, parse_config, train
from tokenlearner_jax import data
from tokenlearner_jax.train import metrics_log, trainer



def tiny_config(decay, dynamic):
    config = load_config("quickstart.py")
    config.model.width, config.model.depth, config.model.num_heads, config.model.mlp_dim = 16, 1, 2, 32
    config.model.token_learner.location = 0.0
    config.dataset.image_size = 16
    config.batch_size = 16
    config.optimizer.learning_rate = 1e-2
    config.optimizer.warmup_steps = 0
    config.ema.decay = decay
    config.ema.dynamic_decay = dynamic
    return config


@pytest.mark.parametrize("dynamic", [False, True])
def test_ema_follows_the_parameters_with_the_configured_decay(dynamic):
    config = tiny_config(0.8, dynamic)
    info = trainer.resolve_dataset(config)
    setup = trainer.Setup(config, info, total_steps=5, devices=jax.devices()[:1])
    state = setup.init_state()
    expected = jax.tree.map(np.array, state.params)
    np.testing.assert_equal(jax.tree.map(np.asarray, state.ema_params), expected)
    batches = data.train_iterator(config.dataset, global_batch_size=config.batch_size, seed=0)
    with setup.context():
        for step in range(5):
            state, _, _ = setup.train_step(state, setup.to_global(next(batches)))
            decay = min(0.8, (1 + step) / (10 + step)) if dynamic else 0.8
            params = jax.tree.map(np.array, state.params)
            expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, expected, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.tree.map(np.asarray, state.ema_params), expected)
    # The average lags behind the parameters, which moved.
    leaves = zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(state.params))
    assert max(float(np.abs(np.asarray(e) - np.asarray(p)).max()) for e, p in leaves) > 1e-4


def test_ema_off_keeps_no_copy():
    config = tiny_config(0.0, True)
    setup = trainer.Setup(config, trainer.resolve_dataset(config), total_steps=1, devices=jax.devices()[:1])
    assert setup.init_state().ema_params == {}


def test_ema_is_evaluated_checkpointed_and_reevaluated(tmp_path):
    workdir = str(tmp_path)
    flags = ["--config.num_train_steps=30", "--config.ema.decay=0.9", "--config.checkpoint_every_steps=30"]
    train(workdir, *flags)
    final = [r for r in metrics_log.read_metrics(workdir) if "eval/accuracy" in r][-1]
    assert final["step"] == 30 and 0 <= final["eval_ema/accuracy"] <= 1
    assert final["eval_ema/num_examples"] == 360
    assert final["eval_ema/loss"] != final["eval/loss"]  # a different set of weights
    # Evaluating the checkpoint afresh gives the same numbers for both (the average was saved).
    again = trainer.evaluate_checkpoint(parse_config([*TINY, *flags]), workdir)
    assert again["eval_ema/accuracy"] == final["eval_ema/accuracy"]
    assert again["eval_ema/loss"] == final["eval_ema/loss"] and again["eval/loss"] == final["eval/loss"]


def test_bad_ema_decay_is_named():
    with pytest.raises(ValueError, match=r"config.ema.decay=1.0: expected in \[0, 1\)"):
        trainer.validate(parse_config([*TINY, "--config.ema.decay=1.0"]))
