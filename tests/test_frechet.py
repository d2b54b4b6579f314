"""Fréchet distance: the formula against independent computations (eigendecompositions, closed forms for
diagonal Gaussians), FD(x, x) = 0, streaming statistics against NumPy, and the conversion of images to a
feature network's normalisation against the data pipeline's."""


import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from tokenlearner_jax.data import preprocess
from tokenlearner_jax.evaluate import frechet


def random_spd(rng, dim):
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def trace_sqrt_product_by_eigh(cov_a, cov_b):
    """tr((A B)^(1/2)) = sum of the square roots of the eigenvalues of A^(1/2) B A^(1/2) (symmetric)."""
    values, vectors = scipy.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(values)) @ vectors.T
    return np.sum(np.sqrt(np.clip(scipy.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)))


def test_distance_matches_an_eigendecomposition_of_the_symmetrised_product():
    rng = np.random.default_rng(0)
    dim = 16
    mean_a, mean_b = rng.normal(size=dim), rng.normal(size=dim)
    cov_a, cov_b = random_spd(rng, dim), random_spd(rng, dim)
    expected = (np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                - 2.0 * trace_sqrt_product_by_eigh(cov_a, cov_b))
    assert frechet.frechet_distance(mean_a, cov_a, mean_b, cov_b) == pytest.approx(expected, rel=1e-10)
    # Symmetric in its two distributions.
    assert frechet.frechet_distance(mean_b, cov_b, mean_a, cov_a) == pytest.approx(expected, rel=1e-10)


def test_diagonal_gaussians_have_the_closed_form_sum_of_squared_mean_and_deviation_differences():
    rng = np.random.default_rng(1)
    mean_a, mean_b = rng.normal(size=5), rng.normal(size=5)
    std_a, std_b = rng.uniform(0.5, 2.0, 5), rng.uniform(0.5, 2.0, 5)
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((std_a - std_b) ** 2)
    got = frechet.frechet_distance(mean_a, np.diag(std_a ** 2), mean_b, np.diag(std_b ** 2))
    assert got == pytest.approx(expected, rel=1e-12)


def test_distance_of_a_set_to_itself_is_zero_and_a_shift_costs_its_squared_length():
    features = np.random.default_rng(2).normal(size=(500, 32)) * 3.0 + 1.0
    mean, cov = frechet.statistics(features)
    assert abs(frechet.frechet_distance(mean, cov, mean, cov)) < 1e-9 * np.trace(cov)
    shift = np.linspace(-1.0, 1.0, 32)
    shifted_mean, shifted_cov = frechet.statistics(features + shift)
    assert frechet.frechet_distance(mean, cov, shifted_mean, shifted_cov) == pytest.approx(np.sum(shift ** 2),
                                                                                              rel=1e-8)


def test_streaming_statistics_match_numpy_mean_and_covariance():
    features = np.random.default_rng(3).normal(size=(103, 7)).astype(np.float32) + 5.0
    running = frechet.RunningStatistics(7)
    for chunk in np.array_split(features, 4):
        running.add(chunk)
    assert running.count == 103
    np.testing.assert_allclose(running.mean(), features.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(running.covariance(), np.cov(features.astype(np.float64), rowvar=False),
                               rtol=1e-9, atol=1e-12)


def test_bad_inputs_fail_with_one_clear_message():
    with pytest.raises(ValueError, match="do not match"):
        frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"expected features \[n, 3\]"):
        frechet.RunningStatistics(3).add(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="2 or more"):
        frechet.statistics(np.zeros((1, 3)))


def test_samples_holding_nan_give_a_nan_distance_instead_of_stopping_the_evaluation():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(50, 4))
    generated = rng.normal(size=(50, 4))
    generated[3, 1] = np.nan
    running = frechet.RunningStatistics(4)
    running.add(generated)
    mean, cov = frechet.statistics(real)
    assert np.isnan(frechet.frechet_distance(mean, cov, running.mean(), running.covariance()))
    assert np.isnan(frechet.frechet_distance(mean, cov, mean + np.inf, cov))
    assert np.isfinite(frechet.frechet_distance(mean, cov, *frechet.statistics(generated[4:])))


@pytest.mark.parametrize("normalize", ["minus_one_one", "imagenet", "unit"])
def test_conversion_from_minus_one_one_matches_the_data_pipeline(normalize):
    pixels = np.random.default_rng(4).integers(0, 256, (2, 5, 5, 3)).astype(np.uint8)
    converted = frechet.normalize_from_minus_one_one(jnp.asarray(preprocess.normalize(pixels, "minus_one_one")),
                                                     normalize)
    np.testing.assert_allclose(np.asarray(converted), preprocess.normalize(pixels, normalize), atol=1e-4)
