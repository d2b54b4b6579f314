"""InceptionV3 pool-3 features (evaluate/inception.py) against torchvision's Inception3 on a committed
fixture (experiments/make_inception_fixture.py: random weights drawn from a seed, which this test draws
again, two 64x64 images resized to 75x75), with torchvision's blocks and with FID's; the weights file
read as .safetensors and .npz through `frechet.inception_network`; and every refusal of a wrong file."""

import functools
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from helpers import ROOT
from tokenlearner_jax.evaluate import frechet, inception

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "inception_v3_io.npz")


@functools.cache
def fixture():
    """(io arrays, the torchvision state_dict of random weights the fixture was made with)."""
    spec = importlib.util.spec_from_file_location(
        "make_inception_fixture", os.path.join(ROOT, "experiments", "make_inception_fixture.py"))
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    io = dict(np.load(FIXTURE))
    return io, maker.random_weights(json.loads(str(io["shapes"])))


@pytest.mark.parametrize("fid_blocks", [False, True])
def test_features_match_torchvisions_inception3(fid_blocks):
    io, weights = fixture()
    model = inception.InceptionV3(fid_blocks=fid_blocks, size=int(io["size"]))
    variables = inception.variables_from_torchvision(weights, model)
    features = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(io["images"])))
    expected = io["features_fid" if fid_blocks else "features_standard"]
    other = io["features_standard" if fid_blocks else "features_fid"]
    assert features.shape == (2, inception.FEATURES)
    np.testing.assert_allclose(features, expected, atol=2e-4 * np.abs(expected).max(), rtol=1e-3)
    assert np.abs(expected - other).max() > 100 * 2e-4 * np.abs(expected).max()  # the blocks do differ here


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_a_weights_file_makes_the_fd_feature_network(tmp_path, suffix):
    _, weights = fixture()
    path = str(tmp_path / f"inception{suffix}")
    extra = {"fc.weight": np.zeros((3, 2048), np.float32), "Conv2d_1a_3x3.bn.num_batches_tracked": np.zeros((), np.int64)}
    if suffix == ".npz":
        np.savez(path, **weights, **extra)
    else:
        safetensors.numpy.save_file({**weights, **extra}, path)
    read = inception.read_weights(path)
    assert sorted(read) == sorted({**weights, **extra}) and np.array_equal(read["Mixed_7c.branch_pool.conv.weight"],
                                                                          weights["Mixed_7c.branch_pool.conv.weight"])
    network = frechet.inception_network(path, fid_blocks=suffix == ".npz")
    assert network.dim == 2048 and ("FID blocks" in network.name) == (suffix == ".npz")
    out = jax.eval_shape(network.apply, jax.ShapeDtypeStruct((4, 16, 16, 3), jnp.float32))  # resized to 299
    assert out.shape == (4, 2048)


def test_wrong_files_are_refused_with_the_tensor_named(tmp_path):
    _, weights = fixture()
    with pytest.raises(FileNotFoundError, match="no such InceptionV3 weights file"):
        frechet.inception_network(str(tmp_path / "missing.npz"))
    (tmp_path / "weights.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"weights.pt.*expected a .safetensors or .npz file"):
        frechet.inception_network(str(tmp_path / "weights.pt"))
    missing = {k: v for k, v in weights.items() if k != "Mixed_6b.branch7x7_2.bn.running_var"}
    with pytest.raises(ValueError, match=r"'Mixed_6b.branch7x7_2.bn.running_var' is missing"):
        inception.variables_from_torchvision(missing)
    transposed = {**weights, "Conv2d_1a_3x3.conv.weight": weights["Conv2d_1a_3x3.conv.weight"].transpose(1, 0, 2, 3)}
    with pytest.raises(ValueError, match=r"'Conv2d_1a_3x3.conv.weight' has shape \(3, 3, 32, 3\)"):
        inception.variables_from_torchvision(transposed)
    with pytest.raises(ValueError, match=r"1 tensors are not InceptionV3's.*'head.weight'"):
        inception.variables_from_torchvision({**weights, "head.weight": np.zeros(2, np.float32)})
