"""Block and grid partitioning (layers/blocking.py) against explicit index arithmetic."""

import numpy as np
import pytest

from tokenlearner_jax.layers import blocking


def _map(height=8, width=12, channels=3):
    return np.random.default_rng(0).normal(size=(2, height, width, channels)).astype(np.float32)


@pytest.mark.parametrize("partition,unpartition", [
    (blocking.block_partition, blocking.block_unpartition),
    (blocking.grid_partition, blocking.grid_unpartition),
])
@pytest.mark.parametrize("size", [1, 2, 4])
def test_partition_then_unpartition_is_identity(partition, unpartition, size):
    x = _map()
    groups = partition(x, size)
    assert groups.shape == (2, (8 // size) * (12 // size), size * size, 3)
    np.testing.assert_array_equal(unpartition(groups, 8, 12), x)


def test_block_groups_hold_neighbouring_windows():
    x = _map()
    blocks = np.asarray(blocking.block_partition(x, 4))
    windows_per_row = 12 // 4
    for k in range(blocks.shape[1]):
        row, col = divmod(k, windows_per_row)
        for p in range(16):
            a, b = divmod(p, 4)
            np.testing.assert_array_equal(blocks[:, k, p], x[:, 4 * row + a, 4 * col + b])


def test_grid_groups_are_dilated():
    x = _map()
    size = 4  # a 4x4 grid over 8x12: cells of 2x3
    groups = np.asarray(blocking.grid_partition(x, size))
    cell_h, cell_w = 8 // size, 12 // size
    for k in range(groups.shape[1]):
        a, b = divmod(k, cell_w)
        for p in range(size * size):
            i, j = divmod(p, size)
            np.testing.assert_array_equal(groups[:, k, p], x[:, i * cell_h + a, j * cell_w + b])


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="multiples of the size 5"):
        blocking.block_partition(_map(), 5)
    with pytest.raises(ValueError, match="not a square window"):
        blocking.block_unpartition(np.zeros((1, 4, 6, 3)), 4, 6)
