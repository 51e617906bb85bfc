"""Counter-based random numbers: every draw is a hash of (seed, stream, neuron id, draw index).

This makes the network a pure function of the spec: whichever rank builds a target neuron, and in
whatever order, it draws the same numbers; and it vectorises over neurons (no generator object
per neuron). The mixer is splitmix64's finaliser, a well-tested 64-bit avalanche hash.
"""
from __future__ import annotations

import hashlib

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x ^ (x >> _S30)) * _M1
        x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def stream_key(seed: int, *parts: str | int) -> np.uint64:
    """A 64-bit key for one named stream (e.g. seed, "connect", projection name)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(int(seed).to_bytes(8, "little", signed=False))
    for part in parts:
        h.update(b"\x00" + str(part).encode())
    return np.uint64(int.from_bytes(h.digest(), "little"))


def uniform(key: np.uint64, ids: np.ndarray, draw: np.ndarray | int = 0) -> np.ndarray:
    """Uniform numbers in (0, 1), one per element of the broadcast of ``ids`` and ``draw``."""
    ids = np.asarray(ids, dtype=np.uint64)
    draw = np.asarray(draw, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = _mix(key ^ (ids * _GOLD))
        x = _mix(x ^ ((draw + np.uint64(1)) * _M2))
    return ((x >> _S11).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def normal(key: np.uint64, ids: np.ndarray) -> np.ndarray:
    """Standard normal numbers, one per id (Box–Muller on two uniforms)."""
    u1 = uniform(key, ids, 0)
    u2 = uniform(key, ids, 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
