"""2D -> 3D initialisation of ViViT's tubelet embedding from a 2D ViT (arXiv 2103.15691, section 3.4).

`weights/init_from.py` calls `inflate_kernel` when a source kernel `[ph, pw, in, out]` meets a target
`[t, ph, pw, in, out]` (`config.init_from.inflate`):
- 'central_frame': the 2D kernel at the middle frame index t // 2, zeros elsewhere, so a tubelet is
  embedded as the 2D patch embedding of its middle frame.
- 'filter': the 2D kernel repeated over the t frames and divided by t, so a tubelet of t identical
  frames is embedded as that frame.
The position embeddings need nothing here: ViViT's spatial one has ViT's name and shape (init_from
resamples it to another grid as for images) and is shared by all temporal slices, i.e. tiled over
time; the temporal ones are new parameters (`temporal_*`), the joint encoder's zero-initialised.
"""

import numpy as np

METHODS = ("central_frame", "filter")


def can_inflate(source_shape, target_shape) -> bool:
    """Whether `target_shape` is `source_shape` with a leading time axis."""
    return len(target_shape) == len(source_shape) + 1 and tuple(target_shape[1:]) == tuple(source_shape)


def inflate_kernel(kernel: np.ndarray, frames: int, method: str) -> np.ndarray:
    """`[ph, pw, in, out]` -> `[frames, ph, pw, in, out]` by `method` ('central_frame' or 'filter')."""
    kernel = np.asarray(kernel)
    if method == "central_frame":
        out = np.zeros((frames,) + kernel.shape, kernel.dtype)
        out[frames // 2] = kernel
        return out
    if method == "filter":
        return np.repeat(kernel[None] / frames, frames, axis=0).astype(kernel.dtype)
    raise ValueError(f"config.init_from.inflate={method!r}: expected one of {METHODS}")
