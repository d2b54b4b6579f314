"""NesT's digits config trains a few steps (in process), its checkpoint gives
class-activation maps whose spatial mean is the predicted class's logit, and
`python -m tokenlearner_jax.visualize class_attention` writes them as a PNG."""

import matplotlib.image
import numpy as np
import pytest

from helpers import parse_config, run_python
from tokenlearner_jax import visualize
from tokenlearner_jax.train import trainer

SHORT = ["--config=configs/nest_digits.py", "--config.num_train_steps=4", "--config.log_every_steps=2",
         "--config.eval_batch_size=120", "--config.optimizer.warmup_steps=1"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("nest") / "run")
    trainer.run(parse_config(SHORT), path)
    return path


def test_class_activation_maps_average_to_the_predicted_logit(workdir):
    result = visualize.class_activation_maps(visualize.config_from_workdir(workdir), workdir, num_images=3)
    assert result["step"] == 4
    cams, logits, predictions = result["cams"], result["logits"], result["predictions"]
    assert cams.shape == (3, 4, 4)  # the 4x4 top-level grid of a 32x32 image in 2x2 patches
    np.testing.assert_allclose(cams.mean(axis=(1, 2)), logits[np.arange(3), predictions], atol=1e-4)
    assert np.abs(cams - cams.mean(axis=(1, 2), keepdims=True)).max() > 1e-4  # not flat


def test_class_attention_command_writes_a_png(workdir, tmp_path):
    proc = run_python(["-m", "tokenlearner_jax.visualize", "class_attention", f"--workdir={workdir}",
                       "--num_images=4", f"--output={tmp_path}"])
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "class_attention.png")
    image = matplotlib.image.imread(tmp_path / "class_attention.png")
    assert image.ndim == 3 and image[..., :3].std() > 0.05
    assert image.shape[1] > 2 * image.shape[0]  # one row of four (image, map) pairs

