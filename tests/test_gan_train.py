"""The 'gan' task through the training loop, on configs/gan_digits.py shrunk to a few seconds a step:
the Fréchet distance against steps in metrics.jsonl and TensorBoard, recomputed independently from the
checkpoint; `visualize samples`; the non-finite guard skipping bad steps; a missing FD classifier refused
before training; and (slow) SIGTERM and kill -9 through main.py resuming to bit-identical generator,
discriminator and EMA."""

import glob
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
import scipy.linalg

from helpers import ENV, ROOT, parse_config, run_python
from tokenlearner_jax import data, visualize
from tokenlearner_jax.tasks import gan
from tokenlearner_jax.train import checkpoint as checkpoint_lib
from tokenlearner_jax.train import metrics_log, trainer

SMALL = ["--config.gan.generator.dims=(32,16,16)", "--config.gan.generator.num_heads=(2,1,1)",
         "--config.gan.generator.latent_dim=16", "--config.gan.discriminator.channels=8", "--config.batch_size=8",
         "--config.eval_batch_size=100", "--config.log_every_steps=2"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A NesT digits classifier trained for two steps: the FD feature network (any checkpoint will do)."""
    workdir = str(tmp_path_factory.mktemp("classifier") / "run")
    trainer.run(parse_config(["--config=configs/gan_digits.py:classifier", "--config.num_train_steps=2",
                              "--config.model.dims=(8,16)", "--config.model.num_heads=(1,1)",
                              "--config.model.depths=(1,1)", "--config.log_every_steps=1"]), workdir)
    return workdir


def gan_flags(classifier, *extra):
    return ["--config=configs/gan_digits.py", *SMALL, f"--config.gan.fd.path={classifier}", *extra]


@pytest.fixture(scope="module")
def gan_run(classifier, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("gan") / "run")
    config = parse_config(gan_flags(classifier, "--config.num_train_steps=6", "--config.eval_every_steps=3",
                                    "--config.checkpoint_every_steps=3"))
    trainer.run(config, workdir)
    return config, workdir


def tensorboard_scalars(workdir, tag):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only to read the event files)

    values = {}
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def test_fd_against_steps_is_logged_and_matches_a_recomputation_from_the_checkpoint(gan_run, classifier):
    config, workdir = gan_run
    records = metrics_log.read_metrics(workdir)
    fd = {r["step"]: r["eval/fd"] for r in records if "eval/fd" in r}
    assert sorted(fd) == [3, 6] and all(np.isfinite(v) and v > 0 for v in fd.values())
    assert all(r["eval/fd_examples"] == 360 for r in records if "eval/fd" in r)  # 4 batches of 100, 40 padding
    assert tensorboard_scalars(workdir, "eval/fd") == pytest.approx(fd, rel=1e-6)

    # The step-6 value from scratch: the EMA generator of the checkpoint on the eval's latents (drawn per batch
    # from fd.seed and the batch's pixels), the classifier's pre-logits, and the FD formula with SciPy.
    generator, variables, step = gan.restore_generator(workdir)
    features = jax.jit(gan.classifier_network(classifier).apply)
    real, fake = [], []
    for batch in data.eval_batches(config.dataset, global_batch_size=100):
        keep = np.asarray(batch["mask"]) > 0
        images = jnp.asarray(batch["image"])
        latents = gan.eval_latents(images, config.gan.fd.seed, generator.latent_dim)
        samples = generator.apply(variables, latents, train=False)
        real.append(np.asarray(features(images), np.float64)[keep])
        fake.append(np.asarray(features(samples), np.float64)[keep])
    real, fake = np.concatenate(real), np.concatenate(fake)
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    expected = (np.sum((real.mean(0) - fake.mean(0)) ** 2) + np.trace(cov_r) + np.trace(cov_f)
                - 2 * np.trace(scipy.linalg.sqrtm(cov_r @ cov_f).real))
    assert step == 6 and len(real) == 360
    assert fd[6] == pytest.approx(expected, rel=1e-4)


def test_samples_command_writes_a_grid_of_the_ema_generator(gan_run, tmp_path):
    _, workdir = gan_run
    result = visualize.generator_samples(workdir, 5, seed=1)
    assert result["step"] == 6 and result["images"].shape == (5, 16, 16, 3)
    assert 0.0 <= result["images"].min() and result["images"].max() <= 1.0
    assert np.abs(result["images"][0] - result["images"][1]).max() > 1e-3  # different latents, different images
    grid = visualize.sample_grid(result["images"], 3)
    assert grid.shape == (2 * 17 - 1, 3 * 17 - 1, 3)
    np.testing.assert_array_equal(grid[17:, 17:33], result["images"][4])
    assert (grid[16] == 1.0).all() and (grid[17:, 34:] == 1.0).all()  # separator line, empty cell
    proc = run_python(["-m", "tokenlearner_jax.visualize", "samples", f"--workdir={workdir}", "--num_images=16",
                       f"--output={tmp_path}"])
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "samples.png")
    image = matplotlib.image.imread(tmp_path / "samples.png")
    assert image.ndim == 3 and image[..., :3].std() > 0.05


def test_a_missing_fd_classifier_is_refused_before_training(tmp_path):
    config = parse_config(["--config=configs/gan_digits.py", f"--config.gan.fd.path={tmp_path / 'nothing'}"])
    with pytest.raises(FileNotFoundError, match=r"config.gan.fd.path=.*nothing.*: no config.json and checkpoints/ "
                                                r"there.*make it with: python main.py "
                                                r"--config=configs/gan_digits.py:classifier"):
        trainer.run(config, str(tmp_path / "gan"))
    assert not os.path.exists(tmp_path / "gan" / "checkpoints")


def test_the_non_finite_guard_skips_gan_steps(classifier, tmp_path):
    """A discriminator learning rate of 1e38: step 1's discriminator weights, over the spectral norm's sigma
    stored before that update, overflow when it judges the generator, which leaves NaN in every step's new
    state; with skip_nonfinite_steps all four steps are counted and none is applied. (Stopping at such a
    step is the loop's, the same for every task: tests/test_fault_tolerance.py.)"""
    flags = gan_flags(classifier, "--config.num_train_steps=4",
                      "--config.gan.discriminator_optimizer.learning_rate=1e38")
    state, _ = trainer.run(parse_config([*flags, "--config.skip_nonfinite_steps=True"]), str(tmp_path / "skip"))
    skipped = [r["train/skipped_steps"] for r in metrics_log.read_metrics(str(tmp_path / "skip"))
               if "train/skipped_steps" in r]
    assert sum(skipped) == 4 and int(state.step) == 4
    fresh = trainer.Setup(parse_config(flags), trainer.resolve_dataset(parse_config(flags)), 4).init_state()
    for field in ("generator_params", "generator_ema", "discriminator_params", "discriminator_state"):
        jax.tree.map(np.testing.assert_array_equal, getattr(state, field), getattr(fresh, field))


def start(workdir, flags):
    log = open(f"{workdir}.log", "w", encoding="utf-8")  # pylint: disable=consider-using-with
    return subprocess.Popen([sys.executable, "main.py", f"--workdir={workdir}", *flags], cwd=ROOT, env=ENV,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_for(condition, proc, timeout=900):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def checkpoints(workdir):
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []


def final_state(workdir, step):
    return checkpoint_lib.read_state(os.path.join(workdir, "checkpoints"), step)[1]


@pytest.mark.slow
def test_sigterm_then_kill_9_resume_to_the_uninterrupted_gan_state(classifier, tmp_path):
    steps = 24
    # Logging every step: SIGTERM checkpoints whatever step it lands on, and a log window cut there would
    # average different steps in the two runs' metrics.jsonl (the states are equal either way).
    flags = gan_flags(classifier, f"--config.num_train_steps={steps}", "--config.checkpoint_every_steps=4",
                      "--config.eval_every_steps=12", "--config.keep_checkpoints=20", "--config.log_every_steps=1")
    straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "interrupted")
    run_python(["main.py", f"--workdir={straight}", *flags])

    proc = start(interrupted, flags)  # SIGTERM once training has started: checkpoint, exit 75
    assert wait_for(lambda: checkpoints(interrupted), proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=600)
    log = open(f"{interrupted}.log", encoding="utf-8").read()
    assert proc.returncode == 75, log[-3000:]
    stopped = checkpoints(interrupted)[-1]
    assert stopped < steps and f"checkpoint of step {stopped} written" in log

    proc = start(interrupted, flags)  # resumed, then killed right after its next checkpoint
    assert wait_for(lambda: checkpoints(interrupted)[-1] > stopped, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoints(interrupted)[-1] < steps, "the run ended before it could be killed"

    run_python(["main.py", f"--workdir={interrupted}", *flags])
    ours, theirs = final_state(interrupted, steps), final_state(straight, steps)
    for field in ("generator_params", "generator_ema", "generator_opt_state", "discriminator_params",
                  "discriminator_state", "discriminator_opt_state"):
        jax.tree.map(np.testing.assert_array_equal, ours[field], theirs[field])
    strip = lambda records: [{k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in records]
    assert strip(metrics_log.read_metrics(interrupted)) == strip(metrics_log.read_metrics(straight))
