"""experiments/fault_matrix.py --reduced: every fault of issue 16 against short real runs of main.py
(a changed config, flipped bytes, two runs on one workdir, an exploding learning rate, unreadable eval
images, an empty class folder, signals, a full disk, bad values, a one-trial kill -9 soak). The script
exits 1 when a row fails; its table is in the assertion message."""

import pytest

from helpers import run_python


@pytest.mark.slow
def test_every_fault_row_passes_on_the_reduced_schedule():
    proc = run_python(["experiments/fault_matrix.py", "--reduced", "--jobs=2"], check=False, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "rows pass" in proc.stdout and "FAIL" not in proc.stdout
