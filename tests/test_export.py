"""Export (tokenlearner_jax/export.py and the to_* maps in weights/): timm's own fixture files come back
byte for byte through import + export, random models of every backbone survive export + import
unchanged, the full-size layouts equal timm's recorded key lists, our own layout is read back by
init_from and convert, what a format cannot hold is refused naming the field, and the command line
writes files with the loading code. The comparison with timm's logits is experiments/export_timm_check.py
(it needs PyTorch)."""

import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from helpers import ROOT, run_python
from tokenlearner_jax import convert, recipes, export, models
from tokenlearner_jax.weights import init_from, maxvit, nest, ours, poolformer, vit

FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def tiny_vit(classifier="token", **overrides):
    config = models.config("vit", variant="S/4", num_classes=5, classifier=classifier)
    config.update(width=32, depth=2, num_heads=2, mlp_dim=64, **overrides)
    return config


def tiny_poolformer():
    config = models.config("poolformer", variant="S12", num_classes=5)
    config.update(depths=(1, 2, 1, 1), dims=(8, 16, 24, 32), head_norm="pooled_layer_norm")
    return config


def tiny_nest(pool_padding="same"):
    config = models.config("nest", variant="T", num_classes=5)
    config.update(dims=(8, 16, 24), num_heads=(2, 2, 4), depths=(1, 1, 2), patch_size=2, pool_padding=pool_padding)
    return config


def tiny_maxvit():
    config = models.config("maxvit", variant="T", num_classes=5)
    config.update(stem_widths=(8, 8), depths=(1, 2, 1, 1), dims=(8, 16, 24, 32), head_dim=8)
    return config


# (weight map, tiny model config, image size, timm fixture file), as written by experiments/make_*_fixtures.py
FAMILIES = {
    "vit": (vit, tiny_vit, 16, "vit_tiny_token.safetensors"),
    "poolformer": (poolformer, tiny_poolformer, 32, "poolformer_tiny.safetensors"),
    "nest": (nest, tiny_nest, 32, "nest_tiny.safetensors"),
    "maxvit": (maxvit, tiny_maxvit, 64, "maxvit_tiny.safetensors"),
}


def random_variables(model_config, image_size, seed=0):
    """Every variable of the model at a random value (BatchNorm variances positive), as NumPy."""
    model = models.build(model_config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3))))
    shapes = flax.core.meta.unbox(shapes)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        values = rng.standard_normal(leaf.shape).astype(np.float32)
        return 0.5 + np.abs(values) if path[-1].key == "var" else values

    return {c: jax.tree_util.tree_map_with_path(draw, tree) for c, tree in shapes.items() if c != "intermediates"}


def assert_same_tensors(actual: dict, expected: dict):
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        got = np.asarray(actual[name])
        assert got.shape == value.shape and got.dtype == value.dtype, (name, got.shape, got.dtype, value.shape)
        np.testing.assert_array_equal(got, value, err_msg=name)


def assert_same_variables(actual: dict, expected: dict):
    assert_same_tensors(ours.to_tensors(actual), ours.to_tensors(expected))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_timms_fixture_files_come_back_unchanged(family):
    """timm's own state dicts (from timm itself) -> ours -> timm: every name, dtype and value identical,
    num_batches_tracked included (0 in the MaxViT fixture, as export writes it)."""
    module, make_config, image_size, file = FAMILIES[family]
    tensors = safetensors.numpy.load_file(os.path.join(FIXTURES, file))
    config = make_config()
    variables = module.from_safetensors(tensors, config)
    assert_same_tensors(module.to_safetensors(variables, config), tensors)
    exported, _ = export.export_variables(variables, full_config(config, image_size), "timm")  # what is written
    assert_same_tensors(exported, tensors)


def test_the_vit_jax_fixture_comes_back_unchanged():
    with np.load(os.path.join(FIXTURES, "vit_tiny_token_vitjax.npz")) as archive:
        arrays = {name: archive[name] for name in archive.files}
    config = tiny_vit()
    assert_same_tensors(vit.to_npz(vit.from_npz(arrays, config), config), arrays)


@pytest.mark.parametrize("family, overrides", [
    ("vit", {}), ("vit", dict(classifier="gap")), ("poolformer", {}), ("nest", {}),
    ("nest", dict(pool_padding="symmetric")), ("maxvit", {})])
def test_random_models_survive_export_and_import(family, overrides):
    module, make_config, image_size, _ = FAMILIES[family]
    config = make_config(**overrides)
    variables = random_variables(config, image_size)
    assert_same_variables(module.from_safetensors(module.to_safetensors(variables, config), config), variables)
    if family == "maxvit":
        assert set(variables) == {"params", "batch_stats"}


@pytest.mark.parametrize("classifier, representation_size", [("token", 0), ("gap", 16)])
def test_random_vits_survive_the_vit_jax_layout(classifier, representation_size):
    config = tiny_vit(classifier, representation_size=representation_size)
    variables = random_variables(config, 16)
    arrays = vit.to_npz(variables, config)
    assert "Transformer/encoderblock_1/MlpBlock_3/Dense_1/kernel" in arrays
    assert ("pre_logits/kernel" in arrays) == bool(representation_size)
    assert_same_variables(vit.from_npz(arrays, config), variables)


def _layout(tree):
    return {name: list(value.shape) for name, value in tree.items()}


def _abstract_variables(model_config, image_size):
    model = models.build(model_config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3))))
    return {c: t for c, t in flax.core.meta.unbox(shapes).items() if c != "intermediates"}


def _full_size_cases():
    with open(os.path.join(FIXTURES, "vit_b16_keys.json"), encoding="utf-8") as f:
        vit_keys = json.load(f)
    yield "vit_b16 (timm)", models.config("vit", variant="B/16", num_classes=1000, classifier="token"), 224, "to_safetensors", \
        vit_keys["safetensors"]
    yield "vit_b16 (vit_jax)", models.config("vit", variant="B/16", num_classes=1000, classifier="token"), 224, "to_npz", \
        vit_keys["npz"]
    with open(os.path.join(FIXTURES, "poolformer_s12_keys.json"), encoding="utf-8") as f:
        keys = json.load(f)["tensors"]
    config = models.config("poolformer", variant="S12")
    config.head_norm = "pooled_layer_norm"
    yield "poolformer_s12", config, 224, "to_safetensors", keys
    with open(os.path.join(FIXTURES, "nest_keys.json"), encoding="utf-8") as f:
        nest_keys = json.load(f)["models"]
    for variant, name in (("T", "nest_tiny_jx"), ("B", "nest_base_jx")):
        yield name, models.config("nest", variant=variant), 224, "to_safetensors", nest_keys[name]
    for size in (224, 384):
        with open(os.path.join(FIXTURES, f"maxvit_tiny_tf_{size}_keys.json"), encoding="utf-8") as f:
            keys = json.load(f)["tensors"]
        yield f"maxvit_tiny_tf_{size}", models.config("maxvit", variant="T"), size, "to_safetensors", keys


@pytest.mark.parametrize("case", list(_full_size_cases()), ids=lambda case: case[0])
def test_full_size_exports_have_timms_names_and_shapes(case):
    """The names and shapes recorded from timm's full-size state dicts (tests/fixtures/*_keys.json), on
    shapes alone (jax.eval_shape)."""
    _, model_config, image_size, function, expected = case
    export_map = getattr(__import__(f"tokenlearner_jax.weights.{model_config.name}", fromlist=["x"]), function)
    variables = _abstract_variables(model_config, image_size)
    assert _layout(jax.eval_shape(lambda v: export_map(v, model_config), variables)) == expected


def full_config(model_config, image_size):
    config = recipes.base()
    config.dataset.image_size = image_size
    config.model = model_config
    return config


def dataset_config(image_size):
    config = recipes.base().dataset
    config.image_size = image_size
    return config


def test_export_variables_checks_the_round_trip_and_refuses_what_a_format_cannot_hold():
    config = full_config(tiny_vit(), 16)
    variables = random_variables(config.model, 16)
    tensors, metadata = export.export_variables(variables, config, "timm", step=7, path="/tmp/x.safetensors")
    assert metadata["step"] == "7" and "timm.create_model(model_name='vit_base_patch16_224'" in metadata["timm_code"]
    assert "img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0" in metadata["timm_code"]
    assert json.loads(metadata["config"])["model"]["width"] == 32

    config.model.token_learner.update(enabled=True, location=1.0, num_tokens=4)
    variables = random_variables(config.model, 16)
    for fmt in ("timm", "vit_jax"):
        with pytest.raises(ValueError, match=r"config.model.token_learner.enabled=True.*--format=ours"):
            export.export_variables(variables, config, fmt)
    tensors, metadata = export.export_variables(variables, config, "ours", step=3)
    assert "params/token_learner/token_masking/Dense_0/kernel" in tensors and metadata["format"] == "tokenlearner_jax"

    poolformer_config = full_config(tiny_poolformer(), 32)
    poolformer_config.model.head_norm = "group_norm"
    with pytest.raises(ValueError, match="config.model.head_norm='group_norm'"):
        export.export_variables(random_variables(poolformer_config.model, 32), poolformer_config, "timm")
    with pytest.raises(ValueError, match="--format=vit_jax: model 'poolformer' cannot be written.*ours, timm"):
        export.export_variables({}, poolformer_config, "vit_jax")
    cifar = full_config(models.config("nest", variant="cifar_T", num_classes=5), 32)
    with pytest.raises(ValueError, match="config.model.num_kv_heads=1"):
        export.export_variables({}, cifar, "timm")
    vivit = full_config(models.config("vivit", variant="S/4"), 16)
    with pytest.raises(ValueError, match="--format=timm: model 'vivit' cannot be written in that layout; available: ours"):
        export.export_variables({}, vivit, "timm")


def test_a_variable_the_map_drops_is_caught_by_the_round_trip_check():
    config = tiny_vit()
    variables = random_variables(config, 16)
    variables["params"]["encoderblock_0"]["extra"] = {"kernel": np.ones((2, 2), np.float32)}
    with pytest.raises(ValueError, match="has no place for 1 variables.*params/encoderblock_0/extra/kernel"):
        export._check_round_trip(variables, vit.to_safetensors(variables, config), "timm", config)


def test_timm_loading_code_per_family():
    code = export.timm_code(tiny_maxvit(), dataset_config(64), "/m.safetensors")
    assert "model_name='maxvit_tiny_tf_224'" in code and "transformer_dim_head=8" in code and "img_size=64" in code
    assert "stem_width=(8, 8), depths=(1, 2, 1, 1), embed_dim=(8, 16, 24, 32), head_hidden_size=32" in code
    assert "mean=(0.5, 0.5, 0.5)" in code  # config.dataset.normalize='minus_one_one'
    code = export.timm_code(models.config("nest", variant="T"), dataset_config(224), "/n.safetensors")
    assert "model_name='nest_tiny_jx'" in code and "embed_dims" not in code
    code = export.timm_code(tiny_nest("symmetric"), dataset_config(32), "/n.safetensors")
    assert code.splitlines()[1].startswith("model = timm.models.nest.Nest(embed_dims=(8, 16, 24), num_heads=(2, 2, 4)")
    assert "pad_type=''" in code and "load_state_dict(safetensors.torch.load_file('/n.safetensors'))" in code
    code = export.timm_code(tiny_poolformer(), dataset_config(32), "/p.safetensors")
    assert "timm.models.metaformer.MetaFormer(depths=(1, 2, 1, 1)" in code
    assert "mlp_act=torch.nn.GELU" in code and "norm_layers=timm.layers.GroupNorm1" in code
    poolformer_s12 = models.config("poolformer", variant="S12", num_classes=10)
    poolformer_s12.head_norm = "pooled_layer_norm"
    assert "model_name='poolformer_s12'" in export.timm_code(poolformer_s12, dataset_config(224), "/p")


def test_our_layout_is_read_back_by_init_from_and_convert(tmp_path):
    config = full_config(tiny_vit(token_learner=dict(enabled=True, location=1.0, num_tokens=4, version="v1.1",
                                                     use_fuser=False, bottleneck_dim=16)), 16)
    variables = random_variables(config.model, 16)
    path = str(tmp_path / "tl.safetensors")
    export.write(path, *export.export_variables(variables, config, "ours", step=5), "ours")
    with safetensors.safe_open(path, "numpy") as f:
        assert json.loads(f.metadata()["config"])["model"]["token_learner"]["num_tokens"] == 4
    assert_same_variables(init_from.load_source(path, config.model), variables)
    report = convert.convert(config, path, str(tmp_path / "converted"))
    assert not report.fresh and not report.adapted and not report.ignored
    restored, step = init_from.restore_variables(str(tmp_path / "converted"))
    assert step == 0
    assert_same_variables(restored, variables)


def test_the_command_writes_timms_file_back_and_refuses_token_learner_in_one_line(tmp_path):
    """A timm fixture converted to a checkpoint directory and exported again is timm's file, value for
    value; vit_jax gives the published layout; a TokenLearner model asks for --format=ours."""
    config = full_config(tiny_vit(), 16)
    workdir = str(tmp_path / "converted")
    convert.convert(config, os.path.join(FIXTURES, "vit_tiny_token.safetensors"), workdir)
    timm_file, npz_file = str(tmp_path / "vit.safetensors"), str(tmp_path / "vit.npz")
    proc = run_python(["-m", "tokenlearner_jax.export", f"--workdir={workdir}", f"--output={timm_file}"])
    assert "32 tensors (timm layout), step 0" in proc.stdout and "timm.create_model(" in proc.stdout
    assert_same_tensors(safetensors.numpy.load_file(timm_file),
                        safetensors.numpy.load_file(os.path.join(FIXTURES, "vit_tiny_token.safetensors")))
    run_python(["-m", "tokenlearner_jax.export", f"--workdir={workdir}/checkpoints", "--format=vit_jax",
                f"--output={npz_file}"])
    with np.load(npz_file) as written, np.load(os.path.join(FIXTURES, "vit_tiny_token_vitjax.npz")) as fixture:
        assert_same_tensors({k: written[k] for k in written.files}, {k: fixture[k] for k in fixture.files})

    config.model.token_learner.update(enabled=True, location=1.0, num_tokens=4)
    tl_workdir = str(tmp_path / "with_tl")
    convert.convert(config, os.path.join(FIXTURES, "vit_tiny_token.safetensors"), tl_workdir)
    proc = run_python(["-m", "tokenlearner_jax.export", f"--workdir={tl_workdir}", "--output=x.safetensors"],
                      check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        "export: config.model.token_learner.enabled=True: the timm ViT layout has no TokenLearner; export with "
        "--format=ours") and "Traceback" not in proc.stderr
    missing = run_python(["-m", "tokenlearner_jax.export", f"--workdir={tmp_path}/nowhere", "--output=x.npz",
                          "--format=vit_jax"], check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == f"export: --workdir={tmp_path}/nowhere: no such directory"
