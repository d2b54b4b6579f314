"""Cutting a feature map into groups of positions that attend only among themselves, and back.

- Blocks (NesT's blocking, MaxViT's block attention): non-overlapping `size x size` windows of
  neighbouring positions. Group k is the k-th window in row-major order over the windows.
- Grid (MaxViT's grid attention): a `size x size` grid laid over the whole map, dilated by
  `(height/size, width/size)`; group k holds the positions that share offset k (row-major) within
  their grid cell, so each group spans the whole image sparsely.

Both give `[batch, groups, size*size, channels]` with the positions of a group in row-major order,
and both are pure reshapes and transposes (no parameters, no arithmetic).
"""

import jax


def _check(x, size: int, what: str):
    if x.ndim != 4:
        raise ValueError(f"{what}: expected a feature map [batch, height, width, channels], got shape {x.shape}")
    if size <= 0 or x.shape[1] % size or x.shape[2] % size:
        raise ValueError(f"{what}: height and width {x.shape[1:3]} must be multiples of the size {size}")


def block_partition(x: jax.Array, size: int) -> jax.Array:
    """`[batch, height, width, channels]` -> `[batch, (height/size)*(width/size), size*size, channels]`."""
    _check(x, size, "block_partition")
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height // size, size, width // size, size, channels)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, (height // size) * (width // size), size * size, channels)


def block_unpartition(blocks: jax.Array, height: int, width: int) -> jax.Array:
    """Inverse of `block_partition`: `[batch, groups, size*size, channels]` -> `[batch, height, width, channels]`."""
    batch, groups, length, channels = blocks.shape
    size = _side(length, "block_unpartition")
    if groups != (height // size) * (width // size) or height % size or width % size:
        raise ValueError(f"block_unpartition: {groups} blocks of {size}x{size} do not tile {height}x{width}")
    x = blocks.reshape(batch, height // size, width // size, size, size, channels)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


def grid_partition(x: jax.Array, size: int) -> jax.Array:
    """`[batch, height, width, channels]` -> `[batch, (height/size)*(width/size), size*size, channels]`, where
    group (a, b) holds positions (i*height/size + a, j*width/size + b) for i, j < size."""
    _check(x, size, "grid_partition")
    batch, height, width, channels = x.shape
    x = x.reshape(batch, size, height // size, size, width // size, channels)
    x = x.transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(batch, (height // size) * (width // size), size * size, channels)


def grid_unpartition(groups: jax.Array, height: int, width: int) -> jax.Array:
    """Inverse of `grid_partition`: `[batch, groups, size*size, channels]` -> `[batch, height, width, channels]`."""
    batch, num_groups, length, channels = groups.shape
    size = _side(length, "grid_unpartition")
    if num_groups != (height // size) * (width // size) or height % size or width % size:
        raise ValueError(f"grid_unpartition: {num_groups} groups of a {size}x{size} grid do not tile "
                         f"{height}x{width}")
    x = groups.reshape(batch, height // size, width // size, size, size, channels)
    return x.transpose(0, 3, 1, 4, 2, 5).reshape(batch, height, width, channels)


def _side(length: int, what: str) -> int:
    side = int(round(length ** 0.5))
    if side * side != length:
        raise ValueError(f"{what}: a group of {length} positions is not a square window")
    return side
