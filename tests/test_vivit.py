"""ViViT: tubelet embedding, TokenLearner per temporal slice, both encoders, 2D -> 3D initialisation
through init_from (central frame and filter inflation) against the 2D ViT, multi-view evaluation, and
the Kinetics configs (one step on synthetic videos, a clear error without Kinetics)."""

import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import ROOT, load_config, parse_config, run_python, validate
from tokenlearner_jax import models, recipes
from tokenlearner_jax.layers import PatchEmbedding
from tokenlearner_jax.train import metrics_log, trainer
from tokenlearner_jax.weights import init_from

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TOKEN_2D = os.path.join(FIXTURES, "vit_tiny_token.safetensors")  # timm ViT, width 32, depth 2, patch 4, 16x16
GAP_2D = os.path.join(FIXTURES, "vit_tiny_gap_bigvision.npz")  # the same architecture with GAP
IMAGES = np.load(os.path.join(FIXTURES, "vit_tiny_io.npz"))["images"]  # [2, 16, 16, 3]


def tiny_vivit(encoder="joint", classifier="token", tubelet_frames=2, **token_learner):
    config = models.config("vivit", variant="S/4", tubelet_frames=tubelet_frames, encoder=encoder, num_classes=5,
                           classifier=classifier, token_learner=token_learner)
    config.width, config.depth, config.num_heads, config.mlp_dim, config.temporal_depth = 32, 2, 2, 64, 1
    return config


def init(config, video_shape, seed=0):
    model = models.build(config)
    return model, jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1,) + video_shape))


def jitted(model, **kwargs):
    """Jitted `(variables, inputs) -> model.apply(variables, inputs, mutable=['intermediates'], **kwargs)`."""
    return jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"], **kwargs))


def run(model, variables, inputs, **kwargs):
    return jitted(model, **kwargs)(variables, inputs)


def test_tubelet_embedding_is_a_3d_patch_projection():
    videos = np.random.default_rng(0).normal(size=(2, 8, 12, 16, 3)).astype(np.float32)
    module = PatchEmbedding(5, (2, 4, 4))
    variables = module.init(jax.random.key(0), videos)
    kernel = np.asarray(flax.core.meta.unbox(variables)["params"]["embedding"]["kernel"])
    assert kernel.shape == (2, 4, 4, 3, 5)
    out = np.asarray(module.apply(variables, videos))
    assert out.shape == (2, 4, 3, 4, 5)  # [batch, frames/2, height/4, width/4, width]
    tubelets = videos.reshape(2, 4, 2, 3, 4, 4, 4, 3).transpose(0, 1, 3, 5, 2, 4, 6, 7)  # b T h w pt ph pw c
    np.testing.assert_allclose(out, np.einsum("bThwtijc,tijcd->bThwd", tubelets, kernel), atol=1e-5)
    with pytest.raises(ValueError, match="video size"):
        module.apply(variables, videos[:, :7])
    with pytest.raises(ValueError, match="rank 5"):
        module.apply(variables, videos[:, 0])


@pytest.mark.parametrize("encoder, location, use_fuser", [
    ("joint", 0, False), ("joint", 0, True), ("factorised", 1, False)])
def test_token_learner_learns_tokens_per_temporal_slice(encoder, location, use_fuser):
    """8 frames in 2x4x4 tubelets: 4 slices of 16 tokens; TokenLearner learns 3 tokens per slice, 12 in all,
    and the tokens of a slice depend only on that slice's frames. (Where TokenLearner runs on the patch
    embeddings, location 0 of the joint encoder, or inside the per-slice spatial encoder of the factorised
    one; later joint layers mix the slices before it.)"""
    config = tiny_vivit(encoder, enabled=True, location=location, num_tokens=3, use_fuser=use_fuser)
    model, variables = init(config, (8, 16, 16, 3))
    videos = np.random.default_rng(0).normal(size=(2, 8, 16, 16, 3)).astype(np.float32)
    apply = jitted(model, capture_intermediates=True)

    def tokens(v):
        _, state = apply(variables, v)
        name = f"token_learner_{location}" if use_fuser else "token_learner"
        return np.asarray(state["intermediates"][name]["__call__"][0]).reshape(2, 4, 3, 32), state

    before, state = tokens(videos)
    attention = state["intermediates"][f"token_learner_{location}" if use_fuser else "token_learner"]
    assert attention["token_attention"][0].shape == (2 * 4, 3, 16)  # [batch x slices, tokens, positions]
    if encoder == "joint":
        block = np.asarray(state["intermediates"][f"encoderblock_{location}"]["__call__"][0])
        assert block.shape == (2, 1 + 3 * 4, 32)  # the block sees the class token + 3 tokens per slice
    changed = videos.copy()
    changed[:, 4:6] += 1.0  # the frames of slice 2
    after, _ = tokens(changed)
    for s in (0, 1, 3):
        np.testing.assert_array_equal(after[:, s], before[:, s])
    assert np.abs(after[:, 2] - before[:, 2]).max() > 1e-3


def test_both_encoders_and_their_parameters():
    videos = jnp.zeros((3, 8, 16, 16, 3))
    joint_model, joint = init(tiny_vivit("joint"), (8, 16, 16, 3))
    fact_model, fact = init(tiny_vivit("factorised"), (8, 16, 16, 3))
    assert run(joint_model, joint, videos)[0].shape == run(fact_model, fact, videos)[0].shape == (3, 5)
    vit_params = set(jax.eval_shape(models.build(tiny_2d()).init, jax.random.key(0),
                                    jnp.zeros((1, 16, 16, 3)))["params"])
    assert set(joint["params"]) == vit_params | {"temporal_pos_embedding"}
    assert set(fact["params"]) == vit_params | {"temporal_cls", "temporal_posembed", "temporal_encoderblock_0",
                                                "temporal_encoder_norm"}
    assert joint["params"]["stem"]["embedding"]["kernel"].value.shape == (2, 4, 4, 3, 32)


def tiny_2d(classifier="token"):
    config = models.config("vit", variant="S/4", num_classes=5, classifier=classifier)
    config.width, config.depth, config.num_heads, config.mlp_dim = 32, 2, 2, 64
    return config


def features_2d(path, classifier):
    config = tiny_2d(classifier)
    _, state = run(models.build(config), init_from.load_source(path, config), IMAGES)
    return np.asarray(state["intermediates"]["pre_logits"][0])


def inflated_variables(path, config, video_shape, inflate):
    """A fresh ViViT's variables with everything the 2D checkpoint at `path` provides, through init_from
    (weight map, reconcile, kernel inflation); the temporal parameters keep their initial values."""
    _, variables = init(config, video_shape, seed=1)
    variables = flax.core.meta.unbox(variables)
    init_config = recipes.base().init_from
    init_config.fresh_if_missing += (r"^temporal_",)
    init_config.inflate = inflate
    values, report = init_from.reconcile(init_from.load_source(path, config), variables, init_config)
    assert report.adapted == [f"stem/embedding/kernel: [4, 4, 3, 32] -> {[config.tubelet_frames, 4, 4, 3, 32]} "
                              f"({inflate} inflation)"]
    flat = init_from.flatten(variables)
    return init_from.unflatten({key: values.get(key, leaf) for key, leaf in flat.items()})


def video_features(config, variables, videos):
    _, state = run(models.build(config), variables, videos)
    return {name: np.asarray(state["intermediates"][name][0]) for name in ("pre_logits", "slice_features")
            if name in state["intermediates"]}


def central_frame_video(frames, tubelet_frames, seed=0):
    """The 2D images at the middle frame of every tubelet, noise in the other frames: [2, frames, 16, 16, 3]."""
    videos = np.random.default_rng(seed).normal(size=(2, frames, 16, 16, 3)).astype(np.float32)
    videos[:, tubelet_frames // 2::tubelet_frames] = IMAGES[:, None]
    return videos


@pytest.mark.parametrize("encoder, classifier, frames", [
    ("joint", "token", 2), ("joint", "gap", 8), ("factorised", "token", 8), ("factorised", "gap", 8)])
def test_central_frame_init_reproduces_the_2d_vit_features(encoder, classifier, frames):
    """A 2D ViT loaded into ViViT with central-frame inflation: the kernel reads only the middle frame of a
    tubelet; the spatial position embedding is the 2D one, tiled over the slices; the temporal one (joint
    encoder) starts at zero. A video whose middle frames are the image then gives the 2D ViT's features:
    - joint encoder, GAP, any number of slices T: each token appears T times, and attention over T equal
      copies of every key equals attention over one, so every token and the mean equal the 2D ones;
    - joint encoder, class token: the class token is a single key beside T copies of each patch key, which
      changes its share of the attention unless T = 1 (one slice, tubelet frames = frames; checked here,
      and that T = 2 does differ in the next test);
    - factorised encoder, either classifier, any T: the spatial transformer is the 2D ViT run on each
      slice, so every slice feature equals the 2D features (the temporal transformer comes after)."""
    config = tiny_vivit(encoder, classifier, tubelet_frames=2)
    variables = inflated_variables(TOKEN_2D if classifier == "token" else GAP_2D, config, (frames, 16, 16, 3),
                                   "central_frame")
    expected = features_2d(TOKEN_2D if classifier == "token" else GAP_2D, classifier)
    got = video_features(config, variables, central_frame_video(frames, 2))
    if encoder == "joint":
        np.testing.assert_allclose(got["pre_logits"], expected, atol=2e-5)
    else:
        assert got["slice_features"].shape == (2, frames // 2, 32)
        for s in range(frames // 2):
            np.testing.assert_allclose(got["slice_features"][:, s], expected, atol=2e-5)


def test_where_the_2d_features_are_not_reproduced():
    """The conditions above are needed: a class token with several slices, or a temporal position
    embedding that is not zero, changes the joint encoder's features."""
    expected = features_2d(TOKEN_2D, "token")
    config = tiny_vivit("joint", "token", tubelet_frames=2)
    variables = inflated_variables(TOKEN_2D, config, (4, 16, 16, 3), "central_frame")
    got = video_features(config, variables, central_frame_video(4, 2))["pre_logits"]
    assert np.abs(got - expected).max() > 1e-2

    variables = inflated_variables(TOKEN_2D, config, (2, 16, 16, 3), "central_frame")
    variables["params"]["temporal_pos_embedding"] = np.random.default_rng(0).normal(size=(1, 1, 1, 32)).astype(
        np.float32)
    got = video_features(config, variables, central_frame_video(2, 2))["pre_logits"]
    assert np.abs(got - expected).max() > 1e-2


def test_filter_inflation_on_a_static_video():
    """Filter inflation (the kernel repeated over t frames, divided by t) embeds t equal frames as the 2D
    kernel embeds one; with a different frame in the tubelet it no longer reproduces the 2D features."""
    config = tiny_vivit("joint", "gap", tubelet_frames=4)
    variables = inflated_variables(GAP_2D, config, (8, 16, 16, 3), "filter")
    kernel = variables["params"]["stem"]["embedding"]["kernel"]
    np.testing.assert_allclose(kernel.sum(axis=0), init_from.load_source(GAP_2D, tiny_2d("gap"))["params"]["stem"]
                               ["embedding"]["kernel"], atol=1e-6)
    static = np.repeat(IMAGES[:, None], 8, axis=1)
    expected = features_2d(GAP_2D, "gap")
    np.testing.assert_allclose(video_features(config, variables, static)["pre_logits"], expected, atol=2e-5)
    assert np.abs(video_features(config, variables, central_frame_video(8, 4))["pre_logits"] - expected).max() > 1e-2


def test_multi_view_evaluation_averages_the_logits():

    config = recipes.base()
    config.dataset.update(dict(name="synthetic", image_size=16, num_frames=4, num_classes=5))
    config.model = tiny_vivit()
    config.batch_size = config.eval_batch_size = 2
    info = trainer.resolve_dataset(config)
    setup = trainer.Setup(config, info, total_steps=1)
    state = setup.init_state()
    state = state.replace(params=jax.tree.map(lambda p: p + 0.1 * jnp.ones_like(p), state.params))  # a non-zero head
    videos = np.random.default_rng(0).normal(size=(2, 3, 4, 16, 16, 3)).astype(np.float32)
    labels = np.array([1, 4], np.int32)
    batch = setup.to_global({"image": videos, "label": labels, "mask": np.ones(2, np.float32)})
    with setup.context():
        sums = jax.device_get(setup.eval_step(state, batch))
    logits = run(setup.task.model, {"params": state.params}, videos.reshape(6, 4, 16, 16, 3))[0].reshape(2, 3, 5)
    mean = np.asarray(logits).mean(axis=1)
    expected_loss = -np.take_along_axis(jax.nn.log_softmax(mean), labels[:, None], axis=1).sum()
    np.testing.assert_allclose(sums["loss"], expected_loss, rtol=1e-5)
    assert sums["correct_top1"] == (mean.argmax(axis=1) == labels).sum()


K400_SMALL = ["--config.dataset.name=synthetic", "--config.batch_size=2", "--config.eval_batch_size=2",
              "--config.num_train_steps=1", "--config.dataset.synthetic_train_size=2",
              "--config.dataset.synthetic_eval_size=2", "--config.dataset.num_workers=0",
              # The full ViViT-B/16x2 and recipe on 4 frames of 64x64 instead of 32 of 224 (CPU time).
              "--config.dataset.num_frames=4", "--config.dataset.image_size=64"]


def test_vivit_k400_runs_one_step_on_synthetic_videos(tmp_path):
    trainer.run(parse_config(["--config=configs/vivit_b16x2_tl_k400.py", *K400_SMALL]), str(tmp_path))
    records = metrics_log.read_metrics(str(tmp_path))
    # ViT-B/16 (86.6M with a 1000-class head) + a second frame in the patch kernel + the 400-class head.
    assert records[0]["model/num_params"] == pytest.approx(86.6e6 + 16 * 16 * 3 * 768 - 600 * 769, rel=0.002)
    evals = [r for r in records if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [1] and evals[0]["eval/num_examples"] == 2  # 4 clips x 3 crops each
    with open(os.path.join(tmp_path, "config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["dataset"]["eval_temporal_views"] * saved["dataset"]["eval_spatial_views"] == 12


@pytest.mark.parametrize("config_file, name", [("vivit_b16x2_tl_k400.py", "kinetics400"),
                                               ("vivit_b16x2_tl_k600.py", "kinetics600")])
def test_vivit_kinetics_without_the_data_explains_the_layout(tmp_path, config_file, name):
    proc = run_python(["main.py", f"--config=configs/{config_file}", f"--workdir={tmp_path / 'run'}",
                       f"--config.dataset.data_dir={tmp_path / 'kinetics'}"], check=False)
    assert proc.returncode != 0
    assert name in proc.stderr and str(tmp_path / "kinetics") in proc.stderr
    assert "<data_dir>/<split>/<class_name>/<video>.mp4" in proc.stderr and "path,label[,start,end]" in proc.stderr


@pytest.mark.parametrize("field, value, message", [
    ("dataset.num_frames", 5, "config.dataset.num_frames=5: expected a positive multiple of config.model.tubelet_frames=2"),
    ("dataset.num_frames", 0, "config.dataset.num_frames=0"),
    ("model.encoder", "divided", "config.model.encoder='divided'"),
    ("init_from.inflate", "mean", "config.init_from.inflate='mean'"),
])
def test_bad_vivit_config_values_name_the_field(field, value, message):
    config = load_config("vivit_b16x2_tl_k400.py")
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(config)
