"""A data=2 x fsdp=2 x model=2 mesh of 8 virtual CPU devices shards the parameters and trains like one device."""

import json

import numpy as np

from helpers import run_python


def test_sharded_mesh_matches_one_device():
    out = json.loads(run_python(["tests/sharded_worker.py"]).stdout.strip().splitlines()[-1])
    single, sharded = out["single"], out["sharded"]
    # The MLP's first kernel [embed=32, mlp=64] is split over fsdp (embed) and model (mlp).
    assert sharded["layout"]["spec"] == "P('fsdp', 'model')"
    assert sharded["layout"]["shard"] == [16, 32]
    assert sharded["layout"]["num_shards"] == 4
    assert single["layout"]["shard"] == single["layout"]["global"] == [32, 64]
    np.testing.assert_allclose(sharded["losses"], single["losses"], rtol=2e-5)
    np.testing.assert_allclose(sharded["params"], single["params"], rtol=2e-4, atol=1e-6)
    assert sharded["eval"]["eval/num_examples"] == single["eval"]["eval/num_examples"] == 360
    np.testing.assert_allclose(sharded["eval"]["eval/accuracy"], single["eval"]["eval/accuracy"], atol=1 / 360)
    assert single["losses"][-1] < single["losses"][0]
