"""BatchNorm in the shared trainer: batch statistics live in the train state, are computed over the
global batch whatever the mesh, are checkpointed, and are used frozen in evaluation (MaxViT digits)."""

import json
import os

import jax
import numpy as np

from helpers import run_python
from tokenlearner_jax.train import checkpoint, metrics_log

TINY_MAXVIT = [
    "--config=configs/maxvit_digits.py",
    "--config.model.stem_widths=(8, 16)", "--config.model.depths=(1, 1)", "--config.model.dims=(32, 32)",
    "--config.dataset.image_size=16", "--config.batch_size=32", "--config.eval_batch_size=120",
    "--config.log_every_steps=10", "--config.optimizer.warmup_steps=5",
    "--config.model.bn_momentum=0.9",  # running statistics that settle within a short run
]


def test_batch_statistics_are_those_of_the_global_batch_on_any_mesh():
    proc = run_python(["tests/batch_stats_worker.py"])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    single, sharded = result["single"], result["sharded"]
    assert single["batch_stats"].keys() == sharded["batch_stats"].keys() and len(single["batch_stats"]) > 10
    moved = 0
    for name, value in single["batch_stats"].items():
        np.testing.assert_allclose(sharded["batch_stats"][name], value, rtol=1e-4, atol=1e-5, err_msg=name)
        if name.endswith("['var']"):
            moved += not np.allclose(value, 1.0)  # running variance starts at 1
    assert moved > 5, "the running statistics were not updated by the train steps"
    np.testing.assert_allclose(sharded["losses"], single["losses"], rtol=1e-4)
    # Sums of |parameter|; a few near-zero biases differ by float noise amplified by Adam's normalisation.
    np.testing.assert_allclose(sharded["params"], single["params"], rtol=1e-4, atol=1e-4)


def test_restored_checkpoint_gives_the_same_eval_in_a_new_process(tmp_path):
    workdir = str(tmp_path)
    run_python(["main.py", f"--workdir={workdir}", *TINY_MAXVIT, "--config.num_train_steps=60",
                "--config.checkpoint_every_steps=60"])
    final = [r for r in metrics_log.read_metrics(workdir) if "eval/accuracy" in r][-1]
    assert final["step"] == 60 and final["eval/accuracy"] > 0.2  # ten classes: chance is 0.1

    stats = checkpoint.read_state(os.path.join(workdir, "checkpoints"), 60)[1]["model_state"]["batch_stats"]
    variances = [np.asarray(v) for path, v in jax.tree_util.tree_leaves_with_path(stats)
                 if jax.tree_util.keystr(path).endswith("['var']")]
    assert variances and any(not np.allclose(v, 1.0) for v in variances)  # trained statistics were saved

    log = os.path.join(workdir, "log.txt")
    before = os.path.getsize(log)
    run_python(["main.py", f"--workdir={workdir}", *TINY_MAXVIT, "--mode=eval"])
    with open(log, encoding="utf-8") as f:
        f.seek(before)
        eval_log = f.read()  # what the eval run logged, at full precision
    assert f"'eval/accuracy': {final['eval/accuracy']}" in eval_log
    assert f"'eval/loss': {final['eval/loss']}" in eval_log
