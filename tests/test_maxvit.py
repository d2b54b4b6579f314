"""MaxViT (models/maxvit.py, layers/relative_position.py): full-size parameter counts against the
reference sheet, the relative bias lookup and table resize against direct loops, window and grid
following the resolution, TokenLearner in a stage, config validation, and a real train step through
the trainer with BatchNorm statistics in the train state."""

import flax
import jax
import numpy as np
import pytest

from helpers import validate
from tokenlearner_jax import models, recipes
from tokenlearner_jax.data import DatasetInfo
from tokenlearner_jax.layers import relative_position
from tokenlearner_jax.models import flops
from tokenlearner_jax.train import trainer


@pytest.mark.parametrize("variant,published", [("T", 30.92), ("S", 68.93), ("B", 119.47), ("L", 211.79)])
def test_full_size_parameter_counts_match_the_sheet(variant, published):
    abstract = flops.abstract_variables(models.build(models.config("maxvit", variant=variant)), (224, 224, 3))
    count = flops.count_params(abstract["params"]) / 1e6
    assert abs(count / published - 1) < 0.005, (variant, count)
    assert set(abstract) == {"params", "batch_stats"}


def test_the_bias_lookup_equals_a_double_loop():
    window, heads = 3, 2
    table = np.random.default_rng(0).normal(size=(heads, 2 * window - 1, 2 * window - 1)).astype(np.float32)
    bias = np.asarray(relative_position.bias_from_table(table, window))
    expected = np.zeros((heads, window ** 2, window ** 2), np.float32)
    for q in range(window ** 2):
        for k in range(window ** 2):
            (qr, qc), (kr, kc) = divmod(q, window), divmod(k, window)
            expected[:, q, k] = table[:, kr - qr + window - 1, kc - qc + window - 1]
    np.testing.assert_array_equal(bias, expected)
    # The module returns the same lookup of its own table.
    module = relative_position.RelativePositionBias(heads, window)
    variables = flax.core.meta.unbox(module.init(jax.random.key(0)))
    np.testing.assert_array_equal(np.asarray(module.apply(variables)),
                                  np.asarray(relative_position.bias_from_table(variables["params"]["table"], window)))


def _bilinear_half_pixel(table, side):
    """Direct 2D bilinear interpolation with half-pixel centres and clamped borders (tf.image.resize)."""
    heads, source = table.shape[:2]
    out = np.zeros((heads, side, side), np.float64)
    scale = source / side
    coords = [min(max((i + 0.5) * scale - 0.5, 0.0), source - 1.0) for i in range(side)]
    for i, y in enumerate(coords):
        for j, x in enumerate(coords):
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, source - 1), min(x0 + 1, source - 1)
            dy, dx = y - y0, x - x0
            out[:, i, j] = ((1 - dy) * (1 - dx) * table[:, y0, x0] + (1 - dy) * dx * table[:, y0, x1]
                            + dy * (1 - dx) * table[:, y1, x0] + dy * dx * table[:, y1, x1])
    return out


def test_resizing_the_bias_table():
    table = np.random.default_rng(1).normal(size=(3, 13, 13)).astype(np.float32)
    assert relative_position.resize_table(table, 7) is table  # the same window: unchanged
    resized = relative_position.resize_table(table, 12)  # 224 -> 384
    assert resized.shape == (3, 23, 23)
    np.testing.assert_allclose(resized, _bilinear_half_pixel(table.astype(np.float64), 23), atol=1e-5)
    np.testing.assert_allclose(relative_position.resize_table(np.full((2, 13, 13), 0.7, np.float32), 16), 0.7,
                               atol=1e-6)
    with pytest.raises(ValueError, match=r"\[heads, 2w-1, 2w-1\]"):
        relative_position.resize_table(np.zeros((2, 12, 12), np.float32), 7)


@pytest.mark.parametrize("size,window", [(224, 7), (384, 12), (512, 16)])
def test_window_and_grid_follow_the_resolution(size, window):
    model = models.build(models.config("maxvit", variant="T"))
    params = flops.abstract_variables(model, (size, size, 3))["params"]
    for stage, heads in (("stage_0", 2), ("stage_3", 16)):
        for name in ("block_attention", "grid_attention"):
            table = params[stage]["block_0"][name]["relative_position_bias"]["table"]
            assert table.shape == (heads, 2 * window - 1, 2 * window - 1)
    assert model.partition_sizes(size, size) == (window, window)


def tiny_config(**overrides):
    config = models.config("maxvit", variant="T", num_classes=4)
    config.update(**{**dict(stem_widths=(8, 16), depths=(2, 1), dims=(32, 64), drop_path_rate=0.1), **overrides})
    return config


def test_partitions_see_the_positions_they_should():
    """Block attention mixes only positions of one window, grid attention only positions of one
    dilated grid: the gradient of one output position of a single attention layer is non-zero exactly
    on its group."""
    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 16))
    for partition, members in (("block", lambda r, c: r // 2 == 1 and c // 2 == 2),
                               ("grid", lambda r, c: r % 4 == 1 and c % 4 == 2)):
        model = models.maxvit.PartitionAttention(partition, 2, head_dim=8)
        variables = jax.jit(lambda rng: model.init(rng, x, train=False))(jax.random.key(1))
        row, col = (2, 5) if partition == "block" else (1, 2)
        grad = jax.jit(jax.grad(lambda v: model.apply(variables, v, train=False)[0, row, col].sum()))(x)
        touched = np.abs(np.asarray(grad[0])).sum(-1) > 0
        expected = np.array([[members(r, c) for c in range(8)] for r in range(8)])
        np.testing.assert_array_equal(touched, expected)


@pytest.mark.parametrize("use_fuser", [False, True])
def test_token_learner_in_a_stage(use_fuser):
    config = tiny_config()
    config.token_learner.update(enabled=True, location=0, num_tokens=4, use_fuser=use_fuser)
    model = models.build(config)
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    # One real run is enough (without the fuser, tokens reach the next stage too); shapes for the other.
    run = jax.eval_shape if use_fuser else (lambda function, *args: jax.jit(function)(*args))
    variables = run(model.init, jax.random.key(1), images)
    stage_0 = variables["params"]["stage_0"]
    assert "token_learner" in stage_0 and ("token_fuser" in stage_0["token_learner"]) == use_fuser
    # The second block runs on learned tokens: no relative bias there; the first keeps its windows.
    assert "relative_position_bias" not in stage_0["block_1"]["block_attention"]
    assert "relative_position_bias" in stage_0["block_0"]["block_attention"]
    # Without the fuser stage 1 sees the 1 x 4 token grid (halved to 1 x 2), so it has no bias either.
    assert ("relative_position_bias" in variables["params"]["stage_1"]["block_0"]["grid_attention"]) == use_fuser
    logits, state = run(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                                  rngs={"dropout": jax.random.key(2)}), variables, images)
    assert logits.shape == (2, 4) and set(state) == {"batch_stats"}
    if not use_fuser:
        assert np.isfinite(np.asarray(logits)).all()


def test_bad_configs_name_the_field():
    config = recipes.base()
    config.model = models.config("maxvit", variant="T", num_classes=1000)
    config.dataset.image_size = 200
    with pytest.raises(ValueError, match=r"config.dataset.image_size=200"):
        validate(config)
    config.dataset.image_size = 224
    validate(config)
    config.model.window_size = 4  # 7x7 last-stage map
    with pytest.raises(ValueError, match=r"window_size=4"):
        validate(config)
    config.model.window_size = 0
    config.model.dims = (64, 128, 250, 512)
    with pytest.raises(ValueError, match=r"config.model.head_dim=32: .*dims=\(64, 128, 250, 512\)"):
        validate(config)
    config.model.dims = ()
    config.model.variant = "XL"
    with pytest.raises(ValueError, match=r"config.model.variant='XL'"):
        validate(config)
    config.model.variant = "T"
    config.model.token_learner.update(enabled=True, location=4)
    with pytest.raises(ValueError, match=r"config.model.token_learner.location=4"):
        validate(config)


def test_imagenet_configs_resolve():
    import importlib.util
    import os
    from helpers import ROOT

    for name, variant in (("tiny", "T"), ("small", "S"), ("base", "B"), ("large", "L")):
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"maxvit_{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config()
        validate(config)
        assert config.model.variant == variant and config.ema.decay == 0.9999
        assert config.optimizer.learning_rate == 3e-3 and config.optimizer.warmup_steps == 10_000
        assert config.mixup.mixup_alpha == 0.8 and config.dataset.randaugment_num_ops == 2


def test_a_train_step_updates_the_batch_statistics_in_the_train_state():
    """A real step of the trainer (trainer.Setup, the jitted sharded step): the BatchNorm statistics
    live in TrainState.model_state['batch_stats'], change in the train step, and the eval step reads
    them without changing them."""
    config = recipes.base()
    config.model = tiny_config()
    config.dataset.image_size = 32
    config.batch_size = 8
    config.eval_batch_size = 8
    info = DatasetInfo(name="synthetic", num_classes=4, image_shape=(32, 32, 3), num_train=8, num_eval=8,
                       multi_label=False)
    setup = trainer.Setup(config, info, total_steps=2)
    state = setup.init_state()
    assert set(state.model_state) == {"batch_stats"}
    before = jax.tree.map(np.asarray, state.model_state)
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32) * 2 + 0.5,
             "label": rng.integers(0, 4, size=(8,)).astype(np.int32)}
    with setup.context():
        state, metrics, _ = setup.train_step(state, setup.to_global(batch))
        after = jax.tree.map(np.asarray, state.model_state)
        eval_metrics = setup.eval_step(state, setup.to_global(dict(batch, mask=np.ones((8,), np.float32))))
    assert np.isfinite(float(metrics["train/loss"]))
    old, new = before["batch_stats"]["stem"]["norm_1"], after["batch_stats"]["stem"]["norm_1"]
    assert np.abs(new["mean"] - old["mean"]).max() > 1e-4
    assert np.abs(new["var"] - old["var"]).max() > 1e-4
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(eval_metrics))
