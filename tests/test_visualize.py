"""Pictures of a quickstart-style checkpoint: TokenLearner attention maps (in-process and through
`python -m tokenlearner_jax.visualize attention`) and the training curves."""

import matplotlib.image
import numpy as np
import pytest

from helpers import parse_config, run_python
from tokenlearner_jax import visualize
from tokenlearner_jax.train import trainer

# The quickstart at 32x32 with patch 4 (an 8x8 grid), 8 tokens before layer 1 of a small 2-layer ViT.
MODEL = ["--config=configs/quickstart.py", "--config.model.width=32", "--config.model.depth=2",
         "--config.model.num_heads=2", "--config.model.mlp_dim=64", "--config.model.token_learner.location=1",
         "--config.eval_batch_size=120"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("visualize") / "run")
    trainer.run(parse_config([*MODEL, "--config.num_train_steps=30", "--config.log_every_steps=5",
                              "--config.eval_every_steps=15", "--config.optimizer.warmup_steps=5"]), path)
    return path


def read_png(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image[..., :3].std() > 0.05, path  # a picture, not a blank page
    return image


def test_attention_maps_differ_between_tokens_and_images(workdir):
    result = visualize.attention_maps(visualize.config_from_workdir(workdir), workdir, num_images=3)
    assert result["step"] == 30 and list(result["maps"]) == ["token_learner"]
    maps = result["maps"]["token_learner"]
    assert maps.shape == (3, 8, 8, 8)  # [images, tokens, grid rows, grid cols]
    np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1.0, rtol=1e-5)  # v1.1: a softmax over positions
    for i in range(3):
        for a in range(8):
            for b in range(a + 1, 8):
                assert np.abs(maps[i, a] - maps[i, b]).max() > 1e-3, (i, a, b)
    for t in range(8):
        assert np.abs(maps[0, t] - maps[1, t]).max() > 1e-3 and np.abs(maps[1, t] - maps[2, t]).max() > 1e-3, t
    images = result["images"]
    assert images.shape == (3, 32, 32, 3) and images.min() >= 0.0 and images.max() <= 1.0
    assert images.max() > 0.9 and images.min() < 0.1  # white strokes on black, normalisation undone
    assert result["labels"].shape == result["predictions"].shape == (3,)


def test_attention_and_curve_commands_write_pngs(workdir, tmp_path):
    output = tmp_path / "pictures"
    proc = run_python(["-m", "tokenlearner_jax.visualize", "attention", f"--workdir={workdir}", *MODEL,
                       "--num_images=2", f"--output={output}"])
    assert proc.stdout.strip().splitlines()[-1] == str(output / "attention.png")
    attention = read_png(output / "attention.png")
    assert attention.shape[1] > 3 * attention.shape[0]  # two rows of nine panels: the image and 8 token maps

    curves = read_png(visualize.curve_picture(workdir, str(output)))
    assert curves.shape[1] > curves.shape[0]


def test_a_config_json_written_before_newer_fields_still_loads(workdir, tmp_path):
    """A run trained before fields such as `ema` or `dataset.num_frames` existed."""
    import json
    import shutil

    old = str(tmp_path / "old_run")
    shutil.copytree(workdir, old)
    with open(f"{old}/config.json") as f:
        saved = json.load(f)
    del saved["ema"], saved["dataset"]["num_frames"], saved["dataset"]["random_erasing_prob"]
    with open(f"{old}/config.json", "w") as f:
        json.dump(saved, f)
    config = visualize.config_from_workdir(old)
    assert config.ema.decay == 0.0 and config.dataset.num_frames == 0
    assert config.model.width == 32 and config.num_train_steps == 30  # the run's own values are kept
    assert visualize.attention_maps(config, old, num_images=1)["step"] == 30
