"""2D relative position bias for attention inside square windows (MaxViT, Swin-style), and resizing
its table to another window size.

A `window x window` group of positions (row-major, as layers/blocking.py lays them out) attends with
logits + bias[h, q, k], where bias[h, q, k] = table[h, row(k) - row(q) + window - 1,
col(k) - col(q) + window - 1]: one learned value per head and per 2D offset of the key from the
query, i.e. a table `[heads, 2*window - 1, 2*window - 1]` (MaxViT's layout, also timm's
`relative_position_bias_table` of its `*_tf_*` MaxViT models).

Fine-tuning at another resolution changes the window (7 at 224, 12 at 384, 16 at 512 for MaxViT);
`resize_table` carries a table over by bilinear interpolation of the offset grid, as MaxViT does
(tf.image.resize, half-pixel centres). `TABLE_PATTERN` names such tables for weights/init_from.py.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tokenlearner_jax.layers.partitioning import param_with_axes

TABLE_PATTERN = r"(^|/)relative_position_bias/table$"


def offset_indices(window: int):
    """(row index, column index) into the table for every (query, key) pair, each `[window**2, window**2]`."""
    rows, cols = np.divmod(np.arange(window * window), window)
    return (rows[None, :] - rows[:, None] + window - 1,
            cols[None, :] - cols[:, None] + window - 1)


def bias_from_table(table, window: int):
    """`[heads, 2*window-1, 2*window-1]` -> the additive logits bias `[heads, window**2, window**2]`."""
    if table.shape[1:] != (2 * window - 1, 2 * window - 1):
        raise ValueError(f"a relative position table of shape {tuple(table.shape)} does not fit a window of {window}")
    row, col = offset_indices(window)
    return table[:, row, col]


def resize_table(table, window: int):
    """`[heads, 2*w-1, 2*w-1]` (any w) -> `[heads, 2*window-1, 2*window-1]` by 2D bilinear interpolation
    (half-pixel centres, no antialiasing: tf.image.resize's default, which MaxViT uses when it
    fine-tunes at a larger window). A table of the right size is returned unchanged."""
    if len(table.shape) != 3 or table.shape[1] != table.shape[2] or table.shape[1] % 2 == 0:
        raise ValueError(f"expected a relative position table [heads, 2w-1, 2w-1], got shape {list(table.shape)}")
    side = 2 * window - 1
    if table.shape[1] == side:
        return table
    resized = jax.image.resize(jnp.asarray(table, jnp.float32), (table.shape[0], side, side), method="bilinear",
                               antialias=False)
    return np.asarray(resized)


class RelativePositionBias(nn.Module):
    """The learned table `[heads, 2*window-1, 2*window-1]` ('table', initialised N(0, 0.02^2)) and its lookup.

    Attributes:
      num_heads: heads of the attention it serves.
      window: side of the square window of positions.
    """

    num_heads: int
    window: int

    @nn.compact
    def __call__(self):
        """Returns the logits bias `[heads, window**2, window**2]`, broadcastable against
        `[batch, heads, window**2, window**2]`."""
        side = 2 * self.window - 1
        table = self.param("table", param_with_axes(nn.initializers.normal(0.02), ("heads", None, None)),
                           (self.num_heads, side, side))
        return bias_from_table(jnp.asarray(table), self.window)
