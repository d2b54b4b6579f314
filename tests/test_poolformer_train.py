"""PoolFormer configs through the trainer: the digits config trains (mixup and TokenLearner switched on by
overrides), the ImageNet recipes resolve to the official values and run a step on synthetic data."""

import pytest
from flax import traverse_util

from helpers import load_config, parse_config, validate
from tokenlearner_jax import models, recipes
from tokenlearner_jax.models import flops
from tokenlearner_jax.tasks import optimizer
from tokenlearner_jax.train import metrics_log, trainer

VARIANTS = {"s12": (0.1, 1e-5, 0.9), "s24": (0.1, 1e-5, 0.9), "s36": (0.2, 1e-6, 0.9), "m36": (0.3, 1e-6, 0.95),
            "m48": (0.4, 1e-6, 0.95)}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_imagenet_recipes(variant):
    drop_path, layer_scale, crop = VARIANTS[variant]
    config = load_config(f"poolformer_{variant}.py")
    validate(config)
    assert config.model.name == "poolformer" and config.model.variant == variant.upper()
    model = models.build(config.model)  # the variant's drop path and layer scale, worked out when built
    assert (model.drop_path_rate, model.layer_scale_init) == (drop_path, layer_scale)
    assert config.dataset.eval_crop_fraction == crop
    assert (config.batch_size, config.num_epochs, config.label_smoothing) == (1024, 300.0, 0.1)
    assert config.optimizer.name == "adamw" and config.optimizer.weight_decay == 0.05
    assert config.optimizer.learning_rate == pytest.approx(1e-3)
    assert config.optimizer.warmup_steps == round(5 * 1_281_167 / 1024)  # 5 epochs
    assert (config.mixup.mixup_alpha, config.mixup.cutmix_alpha) == (0.8, 1.0)
    assert (config.dataset.randaugment_num_ops, config.dataset.randaugment_magnitude) == (2, 9.0)
    half = load_config(f"poolformer_{variant}.py", "512")  # lr and warmup follow the batch size
    assert half.batch_size == 512 and half.optimizer.learning_rate == pytest.approx(5e-4)
    assert half.optimizer.warmup_steps == round(5 * 1_281_167 / 512)


def test_weight_decay_spares_biases_norms_and_layer_scales():
    config = load_config("poolformer_s12.py")
    abstract = flops.abstract_variables(models.build(config.model), (224, 224, 3))["params"]
    mask = traverse_util.flatten_dict(
        optimizer.weight_decay_mask(abstract, config.optimizer.weight_decay_exclude), sep="/")
    decayed = {path for path, on in mask.items() if on}
    assert "stage_0/block_0/mlp/Dense_0/kernel" in decayed and "stem/kernel" in decayed and "head/kernel" in decayed
    assert not any(path.endswith(("/bias", "/scale", "layer_scale_1", "layer_scale_2")) for path in decayed)


def sharded_setup(model_config):
    config = recipes.base()
    config.dataset.image_size = 32
    config.model = model_config
    return trainer.Setup(config, trainer.resolve_dataset(config), total_steps=1)


@pytest.mark.parametrize("version", ["v1.1", "v1.0"])
def test_every_mixer_and_a_fused_token_learner_get_shardings(version):
    """Logical axis names must be distinct within a parameter for the trainer's sharding; the spatial
    MLP and TokenFuser both have a square kernel over one kind of axis."""
    model = models.config("poolformer", variant="S12", num_classes=10, mixers=(
        "pooling", "identity", "attention", "depthwise_conv", "spatial_mlp"), token_learner=dict(enabled=True, location=4, version=version, use_fuser=True))
    model.depths, model.dims, model.attention_head_dim = (1,) * 5, (8,) * 5, 8
    setup = sharded_setup(model)
    flat = traverse_util.flatten_dict(setup.state_shardings.params, sep="/")
    assert "stage_4/token_learner/token_fuser/token_mixing/kernel" in flat
    assert "stage_4/block_0/token_mixer/kernel" in flat  # the spatial MLP over the 1 x N learned tokens
    assert "stage_3/block_0/token_mixer/conv/kernel" in flat
    vit = models.config("vit", variant="S/4", num_classes=10, token_learner=dict(enabled=True, location=1, use_fuser=True))
    vit.width, vit.depth, vit.num_heads, vit.mlp_dim = 16, 2, 2, 32
    sharded_setup(vit)


TINY = ["--config=configs/poolformer_quick.py", "--config.dataset.image_size=32", "--config.model.dims=(8,16,16)",
        "--config.model.depths=(1,1,1)",
        "--config.batch_size=16", "--config.eval_batch_size=120", "--config.num_train_steps=4",
        "--config.log_every_steps=2", "--config.optimizer.warmup_steps=1"]


def test_digits_config_trains_with_mixup_and_token_learner(tmp_path):
    workdir = str(tmp_path / "run")
    trainer.run(parse_config([*TINY, "--config.mixup.mixup_alpha=0.8", "--config.mixup.cutmix_alpha=1.0",
                              "--config.model.token_learner.enabled=True", "--config.model.token_learner.num_tokens=3",
                              "--config.model.mixers=('pooling','attention','spatial_mlp')",
                              "--config.model.attention_head_dim=8"]), workdir)
    records = metrics_log.read_metrics(workdir)
    assert records[0]["model/num_params"] > 0 and records[0]["model/gmacs"] > 0
    evals = [r for r in records if "eval/accuracy" in r]
    assert evals[-1]["step"] == 4 and evals[-1]["eval/num_examples"] == 360


def test_s12_recipe_runs_a_step_on_synthetic_data(tmp_path):
    """The full recipe path: inception crop + RandAugment in the pipeline, mixup / cutmix, AdamW with its
    weight-decay mask; one block per stage and 64x64 images keep the compilation short."""
    trainer.run(parse_config(["--config=configs/poolformer_s12.py", "--config.dataset.name=synthetic",
                              "--config.batch_size=2", "--config.eval_batch_size=2", "--config.num_train_steps=1",
                              "--config.dataset.synthetic_eval_size=2", "--config.dataset.num_workers=0",
                              "--config.dataset.image_size=64", "--config.model.depths=(1,1,1,1)"]), str(tmp_path))
    records = metrics_log.read_metrics(str(tmp_path))
    # S12 (11,915,176) less 1 + 1 + 5 + 1 blocks of 8 C^2 + 11 C parameters at C = 64, 128, 320, 512.
    assert records[0]["model/num_params"] == 11_915_176 - 6_382_336
    assert [r["step"] for r in records if "eval/accuracy" in r] == [1]


def test_bad_mixer_override_is_rejected_with_the_field_named():
    with pytest.raises(ValueError, match=r"config.model.mixers=\('pooling', 'conv'\)"):
        validate(parse_config([*TINY, "--config.model.mixers=('pooling','conv')"]))
