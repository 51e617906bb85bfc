"""Poisson spike sources (NEST's ``poisson_generator``, Brian2's ``PoissonGroup``): a population
whose neurons emit independent homogeneous Poisson trains of rate ``rate_hz`` between
``start_ms`` (inclusive) and ``stop_ms`` (exclusive). They have no integrated state and receive no
input; engines ask :func:`spike_times` for the spikes of a time window and deliver them like any
other spikes.

Window independence. A train is a pure function of (seed, population, neuron id): simulated time
is cut into fixed blocks of ``block_ms(rate)`` (``BLOCK_MS``, shortened for very high rates so a
block holds at most ``MAX_MEAN`` spikes on average). For block j of neuron g the count is
Poisson(rate·block) by inversion of ``rng.uniform(key, g, j·STRIDE)`` and the k-th spike lies at
``j·block + block·rng.uniform(key, g, j·STRIDE + 1 + k)``. A window only selects which spikes it
returns, so the spikes of [0, 5) and [5, 10) are those of [0, 10), bit for bit. Only IEEE
add/multiply/divide touch per-neuron arrays (the one exp() is a scalar per population), so results
do not depend on array lengths or SIMD remainders either.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from cluster_sim.errors import ConfigError
from cluster_sim.models.base import Drive, NeuronModel, Terms, any_value, check_ranges, non_negative
from cluster_sim.network import rng

BLOCK_MS = 10.0  # length of the fixed blocks of simulated time (at rates up to 6.4 kHz)
MAX_MEAN = 64.0  # largest mean count per block; higher rates use proportionally shorter blocks
STRIDE = 1 << 12  # draw indices reserved per block: 1 for the count, the rest for spike times
_TAIL_SD = 10.0  # counts beyond mean + 10 sd (+ 20) are capped: probability < 1e-20


class PoissonSource(NeuronModel):
    name = "poisson"
    variables = ()
    event_vars = ()
    is_source = True
    description = "Poisson spike source: independent trains of rate_hz in [start_ms, stop_ms); no state, no input"
    defaults = {
        "rate_hz": 10.0,
        "start_ms": 0.0,
        "stop_ms": 1e30,
        "threshold_mV": 0.0,  # unused: present so generic code asking for them gets an answer
        "refractory_ms": 0.0,
    }
    param_ranges = {
        "rate_hz": non_negative("a firing rate"), "start_ms": any_value("start of the trains"),
        "stop_ms": any_value("end of the trains"), "threshold_mV": any_value("unused"),
        "refractory_ms": non_negative("unused"),
    }

    def initial_state(self, p: Mapping[str, float], n: int, normal: Callable[[str], Any]) -> dict[str, Any]:
        return {}

    def terms(self, ops: Any, p: Mapping[str, float], y: Mapping[str, Any], drive: Drive) -> Terms:
        return {}

    def check_params(self, p: Mapping[str, float], key: Callable[[str], str]) -> None:
        """Called by spec validation with the full parameters; ``key(name)`` gives the dotted key."""
        check_ranges("neuron model 'poisson'", self.param_ranges, self.defaults, p, key)
        check_params(p, key)


def check_params(p: Mapping[str, float], key: Callable[[str], str] = lambda k: k) -> None:
    """Refuse parameters no Poisson train has: a negative rate, an empty or reversed window."""
    rate = p.get("rate_hz", PoissonSource.defaults["rate_hz"])
    if not (math.isfinite(rate) and rate >= 0.0):
        raise ConfigError(key("rate_hz"), rate, "must be a finite rate >= 0", "use rate_hz >= 0 (0 gives no spikes)")
    start = p.get("start_ms", 0.0)
    stop = p.get("stop_ms", PoissonSource.defaults["stop_ms"])
    if not stop > start:
        raise ConfigError(key("stop_ms"), stop, f"must be after start_ms = {start}", "make stop_ms > start_ms")


def source_key(seed: int, pop_name: str) -> np.uint64:
    """The random stream of the Poisson population ``pop_name`` in a run with ``seed``."""
    return rng.stream_key(seed, "poisson", pop_name)


def block_ms(rate_hz: float) -> float:
    """Block length for this rate: ``BLOCK_MS``, divided so that the mean count is <= MAX_MEAN."""
    mean = rate_hz * BLOCK_MS * 1e-3
    return BLOCK_MS / max(1, math.ceil(mean / MAX_MEAN))


def _poisson_counts(u: np.ndarray, mean: float) -> np.ndarray:
    """Poisson(mean) counts by inversion: the smallest k with CDF(k) >= u. The loop runs until
    every u is covered (bounded by mean + 10 sd + 20), so its length depends on the data but each
    element's result does not: it sees the same sequence of CDF values in any batch."""
    counts = np.zeros(u.shape, np.int64)
    if mean <= 0.0 or u.size == 0:
        return counts
    k_max = int(math.ceil(mean + _TAIL_SD * math.sqrt(mean) + 20.0))
    pk = math.exp(-mean)  # scalar: the only transcendental, identical for every element
    cdf = np.full(u.shape, pk)
    for k in range(1, k_max + 1):
        below = cdf < u
        if not below.any():
            break
        counts += below
        pk = pk * mean / k
        cdf = cdf + pk
    return counts


def spike_times(params: Mapping[str, float], key: np.uint64, gids: np.ndarray, t0: float,
                t1: float) -> tuple[np.ndarray, np.ndarray]:
    """All spikes with t0 <= t < t1 of the Poisson neurons ``gids`` (the ids that address the
    random stream; the BSP engine passes global ids) of a population with stream ``key``
    (:func:`source_key`) and parameters ``params`` (rate_hz, start_ms, stop_ms; defaults apply).

    Returns (index into ``gids`` int64, time ms float64), sorted by (time, index). The union of
    calls over adjoining windows equals one call over their union, bitwise."""
    p = {**PoissonSource.defaults, **params}
    gids = np.asarray(gids, dtype=np.uint64).reshape(-1)
    rate = float(p["rate_hz"])
    lo, hi = max(float(t0), p["start_ms"]), min(float(t1), p["stop_ms"])
    if rate <= 0.0 or gids.size == 0 or not hi > lo:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    length = block_ms(rate)
    # One block of margin on each side: j·L + L·u can round onto a block edge, so a spike may sit
    # just outside its block; the per-spike window test below decides, the same in every call.
    j0 = max(0, math.floor(lo / length) - 1)
    j1 = math.floor(hi / length) + 1  # inclusive
    blocks = np.arange(j0, j1 + 1, dtype=np.uint64)
    first_draw = blocks * np.uint64(STRIDE)
    u = rng.uniform(key, gids[:, None], first_draw[None, :])  # [neuron, block]
    counts = _poisson_counts(u, rate * length * 1e-3)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    flat = counts.reshape(-1)
    neuron = np.repeat(np.repeat(np.arange(gids.size, dtype=np.int64), blocks.size), flat)
    block = np.repeat(np.tile(blocks, gids.size), flat)
    k = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(flat) - flat, flat)
    draws = block * np.uint64(STRIDE) + np.uint64(1) + k.astype(np.uint64)
    t = block.astype(np.float64) * length + length * rng.uniform(key, gids[neuron], draws)
    keep = (t >= lo) & (t < hi)
    neuron, t = neuron[keep], t[keep]
    order = np.lexsort((neuron, t))
    return neuron[order], t[order]
