"""Ring-buffer delivery gives bitwise the sums of the plain one-by-one rule (every slot summed in
(route, spike, synapse) order), with several routes onto one ring, different delays, wrap-around
of the ring, and a restore mid-way: the order that makes results independent of the partition.
(A bincount variant, exact where the slots are still zero, measured 19.5 vs 14.5 ns per event
against ``np.add.at`` on NumPy 2.4 here, so delivery stays ``np.add.at``.)"""
from __future__ import annotations

import tomllib

import numpy as np

from cluster_sim.engine.delivery import RingBuffers, SpikeBatch
from cluster_sim.network.build import build_network
from cluster_sim.spec import parse_spec
from tests.conftest import SMALL_COBAHH

# II gets 1.5 ms in SMALL_COBAHH; a second projection onto E.ge (from I, 2.3 ms) makes two routes
# with different delays share a ring.
EXTRA = """
[projections.IE2]
source = "I"
target = "E"
synapse = "exp_cond_exc"
connect = { rule = "bernoulli", p = 0.1 }
weight_nS = 0.37
delay_ms = 2.3
"""


def _reference_deliver(rings: RingBuffers, ref: dict[str, np.ndarray], spikes: SpikeBatch) -> None:
    """The plain rule: per route in spec order, per spike, per synapse in CSR order, one add."""
    for r in rings.routes:
        ring = ref[r.ring]
        for g, k in zip(spikes.gid, spikes.step):
            if not r.src_offset <= g < r.src_offset + r.n_source:
                continue
            s = g - r.src_offset
            row = (k + 1 + r.delay) % rings.slots
            for j in range(r.indptr[s], r.indptr[s + 1]):
                ring[row, r.target[j]] += r.weight[j]


def test_delivery_is_bitwise_the_one_by_one_sum() -> None:
    net = build_network(parse_spec(tomllib.loads(SMALL_COBAHH + EXTRA)))
    m = 10
    rings = RingBuffers(net, m)
    ref = {k: np.zeros_like(v) for k, v in rings.rings.items()}
    rng = np.random.default_rng(7)
    for r in rings.routes:  # weights of mixed magnitude make the summation order visible in the last bits
        r.weight = rng.uniform(0.1, 10.0, r.weight.size) ** 3
    n_total = net.layout.n_total
    for interval in range(60):
        step0 = interval * m
        got = rings.take(step0, m)
        assert got.shape == (m, rings.width)
        pad = np.ones(rings.width, bool)
        for key, (c0, n) in rings.columns.items():
            rows = np.arange(step0, step0 + m) % rings.slots
            assert np.array_equal(got[:, c0:c0 + n], ref[key][rows]), (interval, key)
            ref[key][rows] = 0.0
            pad[c0:c0 + n] = False
        assert not got[:, pad].any()  # the padding columns stay zero
        if interval == 30:  # a checkpoint/restore in the middle keeps the sums exact
            rings.restore(rings.snapshot())
        count = int(rng.integers(0, 60))
        spikes = SpikeBatch(rng.integers(0, n_total, count), step0 + rng.integers(0, m, count),
                            rng.random(count)).sorted()
        rings.deliver(spikes)
        _reference_deliver(rings, ref, spikes)
    for key in ref:
        assert np.array_equal(rings.rings[key], ref[key]), key
