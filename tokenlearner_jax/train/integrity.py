"""Checksums of a train state, so that a checkpoint knows when it no longer holds what was saved.

A checkpoint's manifest (written by train/checkpoint.py inside the same atomic commit as the arrays)
holds, for every leaf of the state, its shape, dtype and a 64-bit checksum of its values, plus the
SHA-256 of every process's iterator-state file and the loop's extra JSON. The manifest seals itself
with the SHA-256 of its own canonical JSON, so a flipped byte in it is found too.

Why checksums of values rather than hashes of files: the checksum is computed on the devices by one
jitted reduction over the global arrays, whatever their sharding. Every element contributes
`mix(bits, position)` and the contributions are added modulo 2**32. Integer addition is associative
and commutative, so the result is bit-identical for any mesh, any process count and any reduction
order: a checkpoint written by 8 processes is verified after a restore onto 2, and no process ever
gathers the full state (process 0 only writes the 16 hex digits per leaf that every process holds).
Hashing files instead would need process 0 to read every process's files back, and would flag bytes
that no restore reads (orbax's timestamps) as damage.

What the checksum guarantees: `mix` is a bijection of the element's bits for a fixed position, so any
change of one element (one flipped bit or byte, a NaN written over a value) changes the sum for
certain; changes of several elements cancel with probability about 2**-64 (two independent 32-bit
sums). It detects accidental damage (bit rot, truncation, a bad disk or copy); it is not a
cryptographic defence against someone forging a checkpoint.
"""

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

FORMAT = 1
_SEEDS = (np.uint32(0x9E3779B9), np.uint32(0x7F4A7C15))


def path_name(path) -> str:
    """'params/encoder/kernel' for a jax key path."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _dtype_name(leaf) -> str:
    dtype = leaf.dtype
    return f"key<{jax.random.key_impl(leaf)}>" if jnp.issubdtype(dtype, jax.dtypes.prng_key) else str(dtype)


def leaf_specs(tree) -> dict:
    """{path: {'shape': [...], 'dtype': 'float32'}} of a tree of arrays or jax.ShapeDtypeStructs."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path_name(path): {"shape": list(leaf.shape), "dtype": _dtype_name(leaf)} for path, leaf in leaves}


def _fmix32(h):
    """MurmurHash3's finaliser: a bijection of uint32 that mixes every input bit into every output bit."""
    h = h ^ (h >> 16)
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _words(x):
    """The bits of `x` as uint32 (64-bit values become two words on a trailing axis)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_ or jnp.issubdtype(x.dtype, jnp.integer) and x.dtype.itemsize < 4:
        return x.astype(jnp.uint32)  # integer conversion is injective for these types
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _leaf_checksum(x):
    """uint32 [2]: sums over elements of fmix32(bits + key(position)) and fmix32(bits ^ key'(position))."""
    words = _words(x).reshape(-1)
    position = jax.lax.iota(jnp.uint32, words.shape[0])
    first = _fmix32(words + _fmix32(position ^ _SEEDS[0]))
    second = _fmix32(words ^ _fmix32(position ^ _SEEDS[1]))
    return jnp.stack([jnp.sum(first, dtype=jnp.uint32), jnp.sum(second, dtype=jnp.uint32)])


def _leaf_finite(x):
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.all(jnp.isfinite(x))
    return jnp.asarray(True)


def _checksums_and_finite(leaves):
    if not leaves:
        return jnp.zeros((0, 2), jnp.uint32), jnp.zeros((0,), bool)
    return (jnp.stack([_leaf_checksum(x) for x in leaves]), jnp.stack([_leaf_finite(x) for x in leaves]))


def _replicated_like(leaves):
    """A fully replicated sharding on the mesh of the first leaf, so every process can read the result."""
    for leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding):
            return NamedSharding(sharding.mesh, PartitionSpec())
    return None


def describe(tree) -> tuple[dict, list]:
    """({path: {'shape', 'dtype', 'checksum': 16 hex digits}}, [paths of floating leaves holding NaN or
    Inf]) of a tree of (possibly sharded, multi-process) arrays. Blocks until the values are computed;
    every process returns the same result."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    leaves = [jnp.asarray(leaf) if isinstance(leaf, (np.ndarray, np.generic, int, float)) else leaf
              for _, leaf in flat]
    out_sharding = _replicated_like(leaves)
    compute = jax.jit(_checksums_and_finite, out_shardings=(out_sharding, out_sharding) if out_sharding else None)
    sums, finite = compute(leaves)
    sums = np.asarray(sums.addressable_data(0))
    finite = np.asarray(finite.addressable_data(0))
    specs = leaf_specs(tree)
    described, nonfinite = {}, []
    for (name, spec), pair, ok in zip(specs.items(), sums, finite):
        described[name] = {**spec, "checksum": f"{int(pair[0]):08x}{int(pair[1]):08x}"}
        if not ok:
            nonfinite.append(name)
    return described, nonfinite


def structure_differences(saved: dict, abstract_tree) -> list[str]:
    """Lines naming each leaf whose shape or dtype differs between `saved` ({path: {'shape', 'dtype'}},
    from a manifest or orbax's metadata) and the requested `abstract_tree`, and leaves only one has."""
    wanted = leaf_specs(abstract_tree)
    lines = []
    for name in sorted(set(saved) | set(wanted)):
        if name not in wanted:
            lines.append(f"{name}: in the checkpoint, not in the configured state")
        elif name not in saved:
            lines.append(f"{name}: in the configured state, not in the checkpoint")
        else:
            old, new = saved[name], wanted[name]
            if list(old["shape"]) != list(new["shape"]) or old["dtype"] != new["dtype"]:
                lines.append(f"{name}: checkpoint {old['dtype']}{list(old['shape'])}, "
                             f"configured {new['dtype']}{list(new['shape'])}")
    return lines


def checksum_differences(saved: dict, restored: dict) -> list[str]:
    """Paths whose checksum in `restored` (from `describe`) differs from the manifest's."""
    return [name for name in saved if restored.get(name, {}).get("checksum") != saved[name]["checksum"]]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def seal(body: dict) -> dict:
    """`body` with 'sha256' of its canonical JSON added."""
    return {**body, "sha256": sha256(_canonical(body))}


def unseal(record) -> dict:
    """The body of a sealed record; ValueError when the record is not one or was changed."""
    if not isinstance(record, dict) or "sha256" not in record:
        raise ValueError("the manifest is not a sealed record")
    body = {k: v for k, v in record.items() if k != "sha256"}
    if sha256(_canonical(body)) != record["sha256"]:
        raise ValueError("the manifest's own SHA-256 does not match its content")
    if body.get("format") != FORMAT:
        raise ValueError(f"unknown manifest format {body.get('format')!r}")
    return body
