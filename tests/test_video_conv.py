"""X(2+1)D with TokenLearner, transformer and TokenFuser (models/x2plus1d.py), the TokenLearner paper's
Charades / AViD network: the channel-wise convolution against XLA's grouped convolution, shapes, the
three mixers (conv, attention over every position, learned tokens), the space-time unit starting as
the identity, full-size parameter counts against counts worked out from the architecture (and X3D-M's
published size), MACs, config validation, and a few optax steps lowering the loss."""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from tokenlearner_jax import models
from tokenlearner_jax.layers import token_learner as token_learner_lib
from tokenlearner_jax.layers.token_learner import TokenLearnerSpec
from tokenlearner_jax.models import flops, x2plus1d


def _config(**overrides):
    config = ml_collections.ConfigDict(x2plus1d.default_config())
    token_learner = overrides.pop("token_learner", {})
    config.update(overrides)
    config.token_learner.update(token_learner)
    return config


def _tiny(**overrides):
    """A very small two-stage model for 32x32 inputs: 4x4 maps in the transformer stage."""
    fields = dict(variant="tiny", num_classes=6, widths=(8, 16), depths=(1, 2), head_width=32, fc_width=32,
                  dropout_rate=0.0)
    token_learner = {"num_tokens": 3, **overrides.pop("token_learner", {})}
    fields.update(overrides)
    return _config(token_learner=token_learner, **fields)


def _init(model, shape, seed=0):
    """Jitted: op-by-op execution of the many small ops is much slower than compiling them."""
    return flax.core.meta.unbox(jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1,) + shape)))


@pytest.mark.parametrize("kernel, stride, size", [((1, 3, 3), 1, 9), ((1, 3, 3), 2, 8), ((1, 3, 3), 2, 7),
                                                  ((3, 1, 1), 1, 5), ((5, 1, 1), 1, 4), ((3, 3, 3), 2, 6)])
def test_channelwise_conv_equals_a_grouped_convolution(kernel, stride, size):
    x = jax.random.normal(jax.random.key(0), (2, 6, size, size, 5))
    conv = x2plus1d.ChannelwiseConv(kernel, stride)
    kernel_shape = flax.core.meta.unbox(jax.eval_shape(conv.init, jax.random.key(1), x))["params"]["kernel"].shape
    assert kernel_shape == kernel + (5,)
    kernel_value = jax.random.normal(jax.random.key(1), kernel + (5,))
    expected = jax.lax.conv_general_dilated(
        x, kernel_value[..., None, :], (1, stride, stride), [(k // 2, k // 2) for k in kernel],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), feature_group_count=5,
        precision=jax.lax.Precision.HIGHEST)
    out = jax.jit(conv.apply)({"params": {"kernel": kernel_value}}, x)
    assert out.shape == expected.shape == (2, 6, -(-size // stride), -(-size // stride), 5)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("location, attention_stages", [(None, ()), (None, (-1,)), (-1, ()), (0, (1,))])
def test_shapes_and_which_mixer_runs_where(location, attention_stages):
    """Shapes from abstract evaluation (nothing compiled); which modules each block holds: TokenLearner ->
    transformer -> TokenFuser in the blocks of stage `token_learner.location`, a transformer over every
    position in `attention_stages`, the 1x3x3 conv elsewhere."""
    token_learner = dict(enabled=False) if location is None else dict(location=location)
    config = _tiny(attention_stages=attention_stages, token_learner=token_learner)
    model = x2plus1d.build(config)
    videos = jax.ShapeDtypeStruct((2, 4, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: flax.core.meta.unbox(model.init(jax.random.key(0), x)), videos)
    logits, state = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, videos)
    assert logits.shape == (2, 6)
    assert state["intermediates"]["pre_logits"][0].shape == (2, 32)
    config.num_classes = 0
    assert jax.eval_shape(x2plus1d.build(config).apply, variables, videos).shape == (2, 32)
    learner_stage = None if location is None else location % 2
    attention = [s % 2 for s in attention_stages]
    for name in ("stage0_block0", "stage1_block0", "stage1_block1"):
        block, stage = variables["params"][name], int(name[5])
        expected = {"spatial"}
        if stage == learner_stage:
            expected = {"encoderblock_0", "token_learner", "token_fuser"}
        elif stage in attention:
            expected = {"encoderblock_0"}
        assert (set(block["transformer"]) if "transformer" in block else {"spatial"} & set(block)) == expected, name
    maps = {path: value[0].shape for path, value in flax.traverse_util.flatten_dict(state["intermediates"]).items()
            if path[-1] == "token_attention"}
    # 2 clips x 4 frames, 3 tokens, over each block's input map: a stage's first block sees the previous
    # stage's map (16x16 after the stem, 8x8 after stage 0) and downsamples after the transformer.
    positions = {"stage0_block0": 256, "stage1_block0": 64, "stage1_block1": 16}
    assert maps == {(name, "transformer", "token_learner", "token_attention"): (8, 3, count)
                    for name, count in positions.items() if int(name[5]) == learner_stage}


def test_token_learner_v10_runs_on_each_frames_grid():
    """v1.0 (convolutions over the frame's h x w grid, sigmoid maps) in place of v1.1."""
    model = x2plus1d.build(_tiny(token_learner=dict(version="v1.0")))
    videos = jax.ShapeDtypeStruct((2, 4, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: flax.core.meta.unbox(model.init(jax.random.key(0), x)), videos)
    learner = variables["params"]["stage1_block1"]["transformer"]["token_learner"]
    assert learner["Conv_0"]["kernel"].shape == (3, 3, 16 * 2, 3)  # 3x3 convs over the 4x4 map, 3 tokens
    logits, state = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, videos)
    assert logits.shape == (2, 6)
    assert state["intermediates"]["stage1_block1"]["transformer"]["token_learner"]["token_attention"][0].shape == \
        (8, 3, 16)


@pytest.fixture(scope="module")
def tiny_model_and_variables():
    """The default _tiny() model (TokenLearner in its last stage) and its variables, initialised once."""
    model = x2plus1d.build(_tiny())
    return model, _init(model, (4, 32, 32, 3))


def test_learned_token_attention_is_a_softmax_over_each_frame(tiny_model_and_variables):
    model, variables = tiny_model_and_variables
    videos = jax.random.normal(jax.random.key(0), (2, 4, 32, 32, 3))
    _, state = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(variables, videos)
    attention = np.asarray(state["intermediates"]["stage1_block0"]["transformer"]["token_learner"]
                           ["token_attention"][0])
    assert attention.shape == (8, 3, 64) and (attention > 0).all()
    np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-5)
    assert np.abs(attention[0] - attention[1]).max() > 1e-4  # frames differ, so do their maps


def test_the_space_time_unit_starts_as_the_identity():
    """TokenFuser's token-mixing Dense starts at zero, so TokenLearner -> transformer -> TokenFuser -> + x
    returns x unchanged; any other mixing weights change it."""
    spec = TokenLearnerSpec(location=0, num_tokens=4, use_fuser=True)
    unit = x2plus1d.SpaceTimeTransformer(num_heads=2, mlp_dim=16, token_learner=spec)
    x = jax.random.normal(jax.random.key(0), (2, 3, 5, 5, 8))
    variables = flax.core.meta.unbox(jax.jit(lambda key, x: unit.init(key, x, train=False))(jax.random.key(1), x))
    apply = jax.jit(lambda v, x: unit.apply(v, x, train=False))
    np.testing.assert_array_equal(apply(variables, x), x)
    mixing = variables["params"]["token_fuser"]["token_mixing"]
    mixing["kernel"] = jax.random.normal(jax.random.key(2), mixing["kernel"].shape)
    assert np.abs(np.asarray(apply(variables, x) - x)).max() > 1e-2
    # Without TokenLearner the unit is a transformer over all T x h x w positions (not the identity).
    plain = x2plus1d.SpaceTimeTransformer(num_heads=2, mlp_dim=16)
    plain_init = jax.jit(lambda key, x: plain.init(key, x, train=False))
    plain_variables = flax.core.meta.unbox(plain_init(jax.random.key(1), x))
    plain_out = jax.jit(lambda v, x: plain.apply(v, x, train=False))(plain_variables, x)
    assert np.abs(np.asarray(plain_out - x)).max() > 1e-2


def test_a_block_starts_as_its_shortcut():
    """The last BatchNorm of the residual branch starts with scale 0 (X3D's zero-initialised final BN)."""
    block = x2plus1d.Block(width=8, inner=16)
    x = jax.random.normal(jax.random.key(0), (2, 3, 6, 6, 8))
    variables = flax.core.meta.unbox(jax.jit(lambda key, x: block.init(key, x, train=False))(jax.random.key(1), x))
    np.testing.assert_allclose(jax.jit(lambda v, x: block.apply(v, x, train=False))(variables, x), jax.nn.relu(x),
                               atol=1e-6)


def _conv_model_params(variant, num_classes):
    """Parameters of the conv-only X(2+1)D, counted from the architecture (module docstring)."""
    v = x2plus1d.VARIANTS[variant]
    count = 3 * 3 * 3 * v.stem_width + 5 * v.stem_width + 2 * v.stem_width  # stem convs + BN
    width_in = v.stem_width
    for width, depth in zip(v.widths, v.depths):
        inner = int(v.expansion * width)
        se = x2plus1d.round_width(0.0625 * inner)
        for i in range(depth):
            block_in = width_in if i == 0 else width
            count += block_in * inner + 2 * inner       # expand + BN
            count += 9 * inner + 3 * inner + 2 * inner  # 1x3x3 and 3x1x1 channel-wise + BN
            count += (inner * se + se + se * inner + inner) if i % 2 == 0 else 0  # squeeze-excite
            count += inner * width + 2 * width          # project + BN
            count += (block_in * width + 2 * width) if i == 0 else 0  # strided shortcut + BN
        width_in = width
    count += width_in * v.head_width + 2 * v.head_width + v.head_width * v.fc_width
    return count + v.fc_width * num_classes + num_classes


def _transformer_unit_params(width, mlp_dim, tokens, depth=1, bottleneck=64):
    encoder = 4 * width + (4 * width * width + 4 * width) + (2 * width * mlp_dim + mlp_dim + width)
    learner = 2 * width + width * bottleneck + bottleneck + bottleneck * tokens + tokens
    fuser = 2 * width + tokens * tokens + tokens + 2 * width + 2 * width + \
        width * bottleneck + bottleneck + bottleneck * tokens + tokens
    return depth * encoder + learner + fuser


def test_full_size_parameter_counts():
    """X(2+1)D-M as an X3D-M (Kinetics-400 head), and the paper's Charades model: the last stage's seven
    blocks with TokenLearner (8 tokens) -> transformer -> TokenFuser instead of the 1x3x3 conv."""
    conv = x2plus1d.build(_config(variant="M", num_classes=400, token_learner=dict(enabled=False)))
    count = flops.count_params(flops.abstract_variables(conv, (16, 224, 224, 3))["params"])
    assert count == _conv_model_params("M", 400) == 3_702_792
    # X3D-M has one channel-wise 3x3x3 conv (27 weights a channel) where this has 1x3x3 + 3x1x1 (12):
    # 15 x the inner widths of its 26 blocks fewer, against the X3D paper's 3.8M.
    inner_sum = sum(d * int(2.25 * w) for w, d in zip((24, 48, 96, 192), (3, 5, 11, 7)))
    assert abs((count + 15 * inner_sum) / 1e6 - 3.8) < 0.01

    paper = x2plus1d.build(_config(variant="M", num_classes=157))
    abstract = flops.abstract_variables(paper, (8, 64, 64, 3))  # the count does not depend on the input
    width = 432
    removed = 7 * 9 * width + 4 * (width * 32 + 32 + 32 * width + width)  # 1x3x3 convs, 4 squeeze-excites
    expected = _conv_model_params("M", 157) - removed + 7 * _transformer_unit_params(width, 4 * width, 8)
    assert flops.count_params(abstract["params"]) == expected
    assert set(abstract) == {"params", "batch_stats"}


def test_channelwise_macs_are_output_elements_times_taps():
    model = x2plus1d.build(_tiny(token_learner=dict(enabled=False)))
    # 4 frames of 32x32: stem 16x16 (5 taps, 8 ch); stage 0: 8x8, inner 16 (9 + 3 taps); stage 1: 4x4,
    # inner 32, two blocks.
    expected = 4 * 16 * 16 * 8 * 5 + 4 * 8 * 8 * 16 * 12 + 2 * 4 * 4 * 4 * 32 * 12
    assert x2plus1d.channelwise_macs(model, (4, 32, 32, 3)) == expected


def test_a_few_optax_steps_lower_the_multilabel_loss(tiny_model_and_variables):
    """TokenLearner model, sigmoid loss on random multi-hot labels; BatchNorm statistics move in training."""
    model, variables = tiny_model_and_variables
    rng = np.random.default_rng(0)
    videos = jnp.asarray(rng.normal(size=(8, 4, 32, 32, 3)) * 2 + 1, jnp.float32)
    labels = jnp.asarray(rng.integers(0, 2, size=(8, 6)), jnp.float32)
    params, batch_stats = variables["params"], variables["batch_stats"]
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, batch_stats, opt_state):
        def loss_fn(p):
            logits, state = model.apply({"params": p, "batch_stats": batch_stats}, videos, train=True,
                                        mutable=["batch_stats"])
            return optax.sigmoid_binary_cross_entropy(logits, labels).mean(), state["batch_stats"]
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    losses = []
    for _ in range(30):
        params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.6 * losses[0], losses
    before, after = variables["batch_stats"]["stem_norm"]["mean"], batch_stats["stem_norm"]["mean"]
    assert np.abs(np.asarray(after - before)).max() > 0.01


@pytest.mark.parametrize("overrides, message", [
    (dict(variant="XXL"), r"config.model.variant='XXL'"),
    (dict(attention_stages=(4,)), r"config.model.attention_stages=\(4,\): expected stage indices among the 4"),
    (dict(attention_stages=(3,)), r"config.model.attention_stages=\(3,\): expected stages other than "
                                  r"config.model.token_learner.location=-1"),
    (dict(token_learner=dict(location=4)), r"config.model.token_learner.location=4"),
    (dict(token_learner=dict(use_fuser=False)), r"config.model.token_learner.use_fuser=False: expected True"),
    (dict(num_heads=5), r"config.model.num_heads=5: expected a divisor of the inner width 432"),
    (dict(widths=(24, 48)), r"config.model.widths=\(24, 48\) and config.model.depths"),
    (dict(token_learner=dict(version="v2")), r"config.model.token_learner.version='v2'"),
    (dict(token_learner=dict(num_tokens=0)), r"config.model.token_learner.num_tokens=0"),
    (dict(num_classes=-2), r"config.model.num_classes=-2"),
    (dict(dropout_rate=1.0), r"config.model.dropout_rate=1.0"),
])
def test_bad_config_values_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        x2plus1d.build(_config(**overrides))


@pytest.mark.parametrize("overrides, shape, message", [
    (dict(), (32, 32, 3), r"config.dataset.num_frames=0: expected > 0"),
    (dict(), (4, 36, 36, 3), r"config.dataset.image_size=36: expected a size whose map has even sides at "
                             r"transformer stage 1 \(a multiple of 8\): its first block reads a 9x9 map"),
    (dict(token_learner=dict(num_tokens=17)), (4, 32, 32, 3),
     r"config.model.token_learner.num_tokens=17: expected at most the 16 positions per frame of stage 1"),
    (dict(token_learner=dict(enabled=False), attention_stages=(0,)), (4, 38, 38, 3),
     r"config.dataset.image_size=38: expected a size whose map has even sides at transformer stage 0 \(a "
     r"multiple of 4\): its first block reads a 19x19 map"),
])
def test_inputs_that_do_not_fit_name_the_field(overrides, shape, message):
    """models.validate builds the model and calls its check_input on one example's shape."""
    config = _tiny(**overrides)
    with pytest.raises(ValueError, match=message):
        models.validate(config, shape)
    models.validate(config, (4, 48, 48, 3))  # 24 -> 12 -> 6: both stages' first blocks read even maps


def test_default_config_is_the_papers_model():
    """TokenLearner (8 tokens per frame) -> transformer -> TokenFuser in every block of X(2+1)D-M's last
    stage, from the section every backbone shares."""
    config = x2plus1d.default_config()
    assert config["name"] == "x2plus1d" and config["num_classes"] == 157
    assert set(config["token_learner"]) == set(token_learner_lib.default_config())
    model = x2plus1d.build(ml_collections.ConfigDict(config))
    assert model.token_learner == TokenLearnerSpec(location=3, num_tokens=8, version="v1.1", use_fuser=True)
    assert model.transformer_stages() == {3: model.token_learner} and model.attention_stages == ()
    assert (model.widths, model.depths, model.num_heads) == ((24, 48, 96, 192), (3, 5, 11, 7), 8)
    # A variant override brings the variant's values for every field left at -1 / ().
    config["variant"] = "tiny"
    tiny = x2plus1d.build(ml_collections.ConfigDict(config))
    assert (tiny.widths, tiny.depths, tiny.num_heads, tiny.head_width, tiny.token_learner.location) == \
        ((8, 16, 32), (1, 1, 2), 4, 64, 2)
