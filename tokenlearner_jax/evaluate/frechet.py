"""Fréchet distance between two sets of image features (FID when the features are InceptionV3's pool-3).

FD = |mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr((S_r S_g)^(1/2)), with mu and S the mean and the sample
covariance (ddof 1, as np.cov) of each set's features: the Fréchet (2-Wasserstein) distance between
two Gaussians fitted to them (Heusel et al., arXiv 1706.08500). The statistics are accumulated and the
matrix square root is taken in float64 on the host (scipy.linalg.sqrtm, as the reference FID code).

A `FeatureNetwork` maps images to the features; which one is config (`config.gan.fd`, tasks/gan.py):
- 'classifier' (default): the pre-logit features of a classifier checkpoint trained by this project,
  usually on the same data (built by tasks/gan.py, which may read checkpoints); tables must name it,
  since such distances are not comparable with published FIDs.
- 'inception_v3': InceptionV3's pool-3 features (evaluate/inception.py) from a weights file the user
  supplies (.safetensors or .npz, torchvision's state_dict names); 'inception_v3_fid' the same with the
  blocks of the TensorFlow graph FID is defined with (for pytorch-fid's FID weights: the standard FID).
"""

import dataclasses
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from tokenlearner_jax.data import preprocess

NETWORKS = ("classifier", "inception_v3", "inception_v3_fid")


class RunningStatistics:
    """Mean and covariance of feature vectors added in batches, accumulated in float64.

    Attributes:
      dim: feature size d.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.count = 0
        self._sum = np.zeros(dim, np.float64)
        self._outer = np.zeros((dim, dim), np.float64)

    def add(self, features: np.ndarray) -> None:
        """features: `[n, d]`."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"RunningStatistics: expected features [n, {self.dim}], got shape {x.shape}")
        self.count += x.shape[0]
        self._sum += x.sum(axis=0)
        self._outer += x.T @ x

    def mean(self) -> np.ndarray:
        """`[d]`."""
        if self.count < 1:
            raise ValueError("RunningStatistics: no features were added")
        return self._sum / self.count

    def covariance(self) -> np.ndarray:
        """`[d, d]` sample covariance (ddof 1)."""
        if self.count < 2:
            raise ValueError(f"RunningStatistics: a covariance needs 2 or more features, got {self.count}")
        mean = self.mean()
        return (self._outer - self.count * np.outer(mean, mean)) / (self.count - 1)


def statistics(features: np.ndarray):
    """(mean `[d]`, covariance `[d, d]`) of features `[n, d]`, in float64."""
    running = RunningStatistics(np.shape(features)[1])
    running.add(features)
    return running.mean(), running.covariance()


def frechet_distance(mean_a, cov_a, mean_b, cov_b, eps: float = 1e-6) -> float:
    """The Fréchet distance between N(mean_a, cov_a) and N(mean_b, cov_b), in float64.

    When the product of the covariances is singular enough that its square root is not finite, eps * I
    is added to both covariances (as the reference FID code does). NaN when a statistic is not finite (a
    generator whose samples hold NaN or Inf): an evaluation reports it instead of stopping the run. Raises
    ValueError when the square root has an imaginary part that is not round-off."""
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != mean_a.shape * 2:
        raise ValueError(f"frechet_distance: means {mean_a.shape}, {mean_b.shape} and covariances {cov_a.shape}, "
                         f"{cov_b.shape} do not match")
    if not all(np.all(np.isfinite(x)) for x in (mean_a, cov_a, mean_b, cov_b)):
        return float("nan")
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(root)):
        offset = eps * np.eye(cov_a.shape[0])
        root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(root):
        scale = max(1.0, float(np.abs(np.diagonal(root)).max()))
        if np.abs(root.imag).max() > 1e-3 * scale:
            raise ValueError(f"frechet_distance: the square root of the covariance product has an imaginary "
                             f"part of {np.abs(root.imag).max():.3g}; the features may be degenerate")
        root = root.real
    diff = mean_a - mean_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
    """Features of images for the Fréchet distance.

    Attributes:
      name: what the features are, for tables (e.g. 'classifier nest (workdir W, step N) pre-logits, 192-d').
      dim: feature size d.
      apply: jittable `images [batch, h, w, 3] in [-1, 1] -> features [batch, d]`.
    """

    name: str
    dim: int
    apply: Callable[[jax.Array], jax.Array]


def normalize_from_minus_one_one(images: jax.Array, normalize: str) -> jax.Array:
    """Images in [-1, 1] (config.dataset.normalize='minus_one_one') -> the normalisation `normalize`
    ('imagenet', 'minus_one_one' or 'unit') of data/preprocess.normalize, which is affine per channel."""
    offset = preprocess.normalize(np.zeros((1, 1, 3), np.uint8), normalize)
    scale = preprocess.normalize(np.ones((1, 1, 3), np.uint8), normalize) - offset
    return (images + 1.0) * 127.5 * jnp.asarray(scale) + jnp.asarray(offset)


def inception_network(weights_path: str, fid_blocks: bool = False) -> FeatureNetwork:
    """InceptionV3 pool-3 features from `weights_path` (.safetensors or .npz; evaluate/inception.py)."""
    from tokenlearner_jax.evaluate import inception  # pylint: disable=g-import-not-at-top

    if not weights_path or not os.path.exists(weights_path):
        raise FileNotFoundError(f"config.gan.fd.path={weights_path!r}: no such InceptionV3 weights file")
    model = inception.InceptionV3(fid_blocks=fid_blocks)
    variables = inception.variables_from_torchvision(inception.read_weights(weights_path), model)
    blocks = "FID blocks" if fid_blocks else "torchvision blocks"
    return FeatureNetwork(name=f"InceptionV3 pool-3 ({blocks}, {os.path.abspath(weights_path)}), 2048-d",
                          dim=inception.FEATURES, apply=lambda images: model.apply(variables, images))
