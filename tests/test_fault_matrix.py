"""experiments/fault_matrix.py --reduced on the rows whose behaviour no other test drives end to end
through main.py: a changed config refused against a finished run (the shared uninterrupted baseline run
and the script's comparisons with it), two runs started together on one workdir, a second run on a live
one, an empty class folder, a full disk from the start, and the five bad values (a wrong field, an
empty weight file). The script exits 1 when a row fails; its table is in the assertion message.

The other rows have tests of their own, through main.py or on the part that handles the fault: flipped
and missing checkpoint bytes (test_fault_tolerance.py, test_checkpoint_integrity.py), the exploding
learning rate (test_fault_tolerance.py), unreadable eval images (test_eval_exact.py), signals during
start-up and between log steps (test_preemption.py, test_fault_tolerance.py), a failed asynchronous write
(test_checkpoint_integrity.py, test_fault_tolerance.py) and kill -9 (test_fault_tolerance.py,
test_trainer.py). The full matrix, every row, is in experiments/results/fault_matrix.md."""

import pytest

from helpers import run_python

ROWS = ("changed_config", "two_runs_together", "second_run_later", "empty_class_folder", "full_disk_at_start",
        "too_many_tokens", "infinite_learning_rate", "indivisible_heads", "unknown_dataset", "empty_weight_file")


@pytest.mark.slow
def test_the_fault_rows_without_a_test_of_their_own_pass_on_the_reduced_schedule():
    proc = run_python(["experiments/fault_matrix.py", "--reduced", "--jobs=2", f"--only={','.join(ROWS)}"],
                      check=False, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert f"{len(ROWS)} of {len(ROWS)} rows pass" in proc.stdout and "FAIL" not in proc.stdout
