"""Our own safetensors layout, for any model of ours (TokenLearner, TokenFuser, ViViT, and every
backbone): `python -m tokenlearner_jax.export --format=ours` writes it, `config.init_from.path`,
`tokenlearner_jax.convert` and `predict` read it back.

Every variable of every collection is one tensor, named '<collection>/<path>' with the path '/'-joined as
in the Flax tree ('params/encoderblock_0/MlpBlock_3/Dense_0/kernel', 'batch_stats/stem/norm_1/mean'),
in our shapes and dtypes. The file's metadata (string to string, safetensors' `__metadata__`) holds
'format': 'tokenlearner_jax', 'config': the run's whole config as JSON, and 'step': the checkpoint's step.
timm's state dicts never contain '/' in their names, so the two layouts cannot be confused.
"""

import json
import struct

import numpy as np
from flax import traverse_util

FORMAT = "tokenlearner_jax"


def to_tensors(variables: dict) -> dict:
    """{collection: nested dict of arrays} -> {'<collection>/<path>': NumPy array}."""
    return {f"{collection}/{path}": np.asarray(leaf)
            for collection, tree in variables.items()
            for path, leaf in traverse_util.flatten_dict(dict(tree), sep="/").items()}


def from_tensors(tensors: dict) -> dict:
    """Inverse of `to_tensors`."""
    variables = {}
    for name, value in tensors.items():
        collection, path = name.split("/", 1)
        variables.setdefault(collection, {})[path] = value
    return {collection: traverse_util.unflatten_dict(tree, sep="/") for collection, tree in variables.items()}


def metadata(config_json: str, step: int) -> dict:
    """The metadata entries of a file of this layout."""
    return {"format": FORMAT, "config": config_json, "step": str(step)}


def read_metadata(raw: bytes) -> dict:
    """The `__metadata__` of a safetensors file's bytes ({} when it has none): the header is an 8-byte
    little-endian length followed by that many bytes of JSON."""
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length]).get("__metadata__") or {}


def is_ours(raw: bytes) -> bool:
    """Whether safetensors bytes hold this layout (rather than a timm state dict)."""
    return read_metadata(raw).get("format") == FORMAT


def load(raw: bytes) -> dict:
    """{collection: nested dict of NumPy arrays} from the bytes of a file of this layout."""
    import safetensors.numpy  # pylint: disable=g-import-not-at-top

    return from_tensors(safetensors.numpy.load(raw))
