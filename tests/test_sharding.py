"""A data=2 x fsdp=2 x model=2 mesh of 8 virtual CPU devices shards the parameters and trains like one device;
a data=8 mesh holds the parameters on every device and splits their optimizer state over the 8."""

import json

import numpy as np

from helpers import run_python


def test_sharded_mesh_matches_one_device():
    out = json.loads(run_python(["tests/sharded_worker.py"]).stdout.strip().splitlines()[-1])
    single, sharded, data_parallel = out["single"], out["sharded"], out["data_parallel"]
    # The MLP's first kernel [embed=32, mlp=64] is split over fsdp (embed) and model (mlp), and so is its
    # Adam moment: no dimension is left for the data axis.
    for name in ("kernel", "moment"):
        assert sharded["layout"][name]["spec"] == "P('fsdp', 'model')"
        assert sharded["layout"][name]["shard"] == [16, 32]
        assert sharded["layout"][name]["num_shards"] == 4
        assert single["layout"][name]["shard"] == single["layout"][name]["global"] == [32, 64]
    # Data-parallel over 8: the kernel whole on every device, its moment split 8 ways along embed (the
    # outermost dimension).
    assert data_parallel["layout"]["kernel"]["shard"] == [32, 64]
    assert data_parallel["layout"]["kernel"]["num_shards"] == 1
    assert data_parallel["layout"]["moment"]["spec"] == "P(('fsdp', 'data'), 'model')"
    assert data_parallel["layout"]["moment"]["shard"] == [4, 64]
    assert data_parallel["layout"]["moment"]["num_shards"] == 8
    # The initialisation's random draws are batched where every device holds all the parameters, not where
    # they are split; the parameters are the same bits either way.
    assert (single["batch_draws"], sharded["batch_draws"], data_parallel["batch_draws"]) == (True, False, True)
    for run in (sharded, data_parallel):
        for actual, expected in zip(run["initial"], single["initial"]):
            np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))
        np.testing.assert_allclose(run["losses"], single["losses"], rtol=2e-5)
        np.testing.assert_allclose(run["params"], single["params"], rtol=2e-4, atol=1e-6)
        assert run["eval"]["eval/num_examples"] == single["eval"]["eval/num_examples"] == 360
        np.testing.assert_allclose(run["eval"]["eval/accuracy"], single["eval"]["eval/accuracy"], atol=1 / 360)
    assert single["losses"][-1] < single["losses"][0]


def _split(mesh_shape, spec, shape):
    from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec

    from tokenlearner_jax.train import mesh

    abstract_mesh = AbstractMesh(mesh_shape, ("data", "fsdp", "model"))
    return str(mesh.split_over_data(NamedSharding(abstract_mesh, PartitionSpec(*spec)), shape).spec)


def test_optimizer_state_is_split_along_its_outermost_unsplit_dimension_over_data():
    # the outer of two free dimensions, however small; a mesh axis of size 1 leaves its dimension free
    assert _split((2, 1, 1), ("fsdp", "model"), (32, 64)) == "P(('fsdp', 'data'), 'model')"
    assert _split((2, 1, 1), (None, None), (2, 32)) == "P('data', None)"
    assert _split((2, 1, 1), (), (3, 10)) == "P(None, 'data')"  # 3 does not split in two
    # a dimension already split over fsdp stays as it is; the other one takes the data axis
    assert _split((2, 2, 1), ("fsdp", None), (64, 32)) == "P('fsdp', 'data')"
    # unchanged: no data parallelism, the data axis already used, no dimension that divides, a scalar
    assert _split((1, 2, 2), (None, None), (64, 32)) == "P(None, None)"
    assert _split((2, 1, 1), ("data", None), (64, 32)) == "P('data', None)"
    assert _split((4, 1, 1), (None,), (6,)) == "P(None,)"
    assert _split((2, 1, 1), (), ()) == "P()"


def test_cpu_device_count_is_two_where_cores_and_batch_sizes_allow():
    from ml_collections import ConfigDict

    from tokenlearner_jax.train import distributed

    def count(batch_size=32, eval_batch_size=100, grad_accum_steps=1, requested=0, cores=2):
        config = ConfigDict(dict(batch_size=batch_size, eval_batch_size=eval_batch_size,
                                 grad_accum_steps=grad_accum_steps))
        return distributed.cpu_device_count(config, requested, cores)

    assert count() == 2
    assert count(cores=16) == 2
    assert count(cores=1) == 1
    assert count(batch_size=33) == 1
    assert count(eval_batch_size=101) == 1
    assert count(batch_size=36, grad_accum_steps=2) == 2
    assert count(batch_size=34, grad_accum_steps=2) == 1  # micro-batches of 17
    assert count(requested=3, cores=1, batch_size=33) == 3  # asked for: the trainer's checks then apply
