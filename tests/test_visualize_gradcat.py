"""GradCAT on a checkpoint: a tiny NesT trained a few steps on canvas digits (in process), its GradCAT paths
(nested blocks from the whole image down, one per level) and CAMs from `visualize.gradcat_paths`, and
`python -m tokenlearner_jax.visualize gradcat` writing them as a PNG, for the predicted or a given class."""

import jax
import matplotlib.image
import numpy as np
import pytest

from helpers import parse_config, run_python
from tokenlearner_jax import data, models, visualize
from tokenlearner_jax.weights import init_from
from tokenlearner_jax.train import trainer

# 32x32 canvases in 2x2 patches: grids 16, 8 and 4 on blocks of 4x4 (16, 4 and 1 blocks).
SHORT = ["--config=configs/nest_canvas_digits.py", "--config.dataset.image_size=32", "--config.model.patch_size=2",
         "--config.model.dims=(16,16,16)", "--config.model.num_heads=(1,1,1)", "--config.model.depths=(1,1,1)",
         "--config.num_train_steps=4", "--config.batch_size=32", "--config.log_every_steps=2",
         "--config.eval_batch_size=720", "--config.optimizer.warmup_steps=1"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("gradcat") / "run")
    trainer.run(parse_config(SHORT), path)
    return path


def logits_of(workdir, config, images):
    model = models.build(config.model)
    variables, _ = init_from.restore_variables(workdir)
    return np.asarray(jax.jit(lambda x: model.apply(variables, x, train=False))(images))


@pytest.mark.parametrize("target", [None, 7])
def test_paths_are_nested_blocks_from_the_whole_image_down(workdir, target):
    config = visualize.config_from_workdir(workdir)
    result = visualize.gradcat_paths(config, workdir, num_images=3, target=target)
    assert result["step"] == 4 and result["images"].shape == (3, 32, 32, 3) and len(result["paths"]) == 3
    traced = [p.target for p in result["paths"]]
    assert traced == (list(result["predictions"]) if target is None else [7] * 3)
    for path in result["paths"]:
        np.testing.assert_array_equal(path.levels, [2, 1, 0])
        np.testing.assert_array_equal(path.boxes[0], [0, 0, 32, 32])  # the top level's one block
        for parent, child in zip(path.boxes[:-1], path.boxes[1:]):
            assert child[2] - child[0] == child[3] - child[1] == (parent[2] - parent[0]) // 2
            assert parent[0] <= child[0] and child[2] <= parent[2] and parent[1] <= child[1] and child[3] <= parent[3]


def test_cams_are_the_traced_classes_maps(workdir):
    config = visualize.config_from_workdir(workdir)
    images = next(iter(data.eval_batches(config.dataset, global_batch_size=3)))["image"]
    logits = logits_of(workdir, config, images)
    for target in (None, 7):
        result = visualize.gradcat_paths(config, workdir, num_images=3, target=target)
        traced = np.array([p.target for p in result["paths"]])
        assert result["cams"].shape == (3, 4, 4)  # the 4x4 top-level grid
        np.testing.assert_allclose(result["cams"].mean(axis=(1, 2)), logits[np.arange(3), traced], atol=1e-4)
    with pytest.raises(ValueError, match="--class=10"):
        visualize.gradcat_paths(config, workdir, num_images=1, target=10)


def test_gradcat_command_writes_a_png(workdir, tmp_path):
    proc = run_python(["-m", "tokenlearner_jax.visualize", "gradcat", f"--workdir={workdir}", "--num_images=4",
                       "--class=3", f"--output={tmp_path}"])
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "gradcat.png")
    image = matplotlib.image.imread(tmp_path / "gradcat.png")
    assert image.ndim == 3 and image[..., :3].std() > 0.05  # a picture, not a blank page
    assert image.shape[0] > 0.45 * image.shape[1]  # two rows of two (path, CAM) pairs, not one row
