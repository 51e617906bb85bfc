"""Ring-buffer delivery gives bitwise the sums of the plain one-by-one rule (every slot summed in
(source group, spike, projection, synapse) order, a source group being the projections of one
source population with one delay), with several routes onto one ring, different delays,
wrap-around of the ring, and a restore mid-way: the order that makes results independent of the
partition. (A bincount variant, exact where the slots are still zero, measured 19.5 vs 14.5 ns per
event against ``np.add.at`` on NumPy 2.4 here, so delivery stays ``np.add.at``.)"""
from __future__ import annotations

import tomllib

import numpy as np
import pytest

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


def _reference_deliver(net, weights: dict[str, np.ndarray], slots: int, ref: dict[str, np.ndarray],
                       spikes: SpikeBatch) -> None:
    """The plain rule, from the projections: per source group (source population, delay) in
    order of first appearance, per spike, per projection of the group in spec order, per synapse
    in CSR order, one add."""
    groups: dict[tuple[str, int], list] = {}
    for proj in net.projections:
        groups.setdefault((proj.source, proj.delay_steps), []).append(proj)
    for (source, delay), projs in groups.items():
        off = net.layout.offsets[net.layout.index(source)]
        for g, k in zip(spikes.gid, spikes.step):
            if not off <= g < off + net.populations[source].count:
                continue
            s, row = g - off, (k + 1 + delay) % slots
            for proj in projs:
                indptr, tgt, _ = proj.by_source()
                ring, w = ref[f"{proj.target}.{proj.synapse.var}"], weights[proj.spec.name]
                for j in range(indptr[s], indptr[s + 1]):
                    ring[row, tgt[j]] += w[j]


def test_delivery_is_bitwise_the_one_by_one_sum() -> None:
    net = build_network(parse_spec(tomllib.loads(SMALL_COBAHH + EXTRA)))
    m = 10
    rng = np.random.default_rng(7)
    for proj in net.projections:  # weights of mixed magnitude make the summation order visible in the last bits
        proj.weight = rng.uniform(0.1, 10.0, proj.weight.size) ** 3
    weights = {proj.spec.name: proj.by_source()[2] for proj in net.projections}
    rings = RingBuffers(net, m)
    assert len(rings.routes) < len(net.projections)  # EE+EI and IE+II share a source and a delay
    assert rings.slots % m == 0 and rings.buffer.ctypes.data % 64 == 0
    ref = {k: np.zeros_like(v) for k, v in rings.rings.items()}
    n_total = net.layout.n_total
    for interval in range(60):
        step0 = interval * m
        got = rings.take(step0, m).copy()  # a view, cleared by the next take
        assert got.shape == (m, rings.width)
        pad = np.ones(rings.width, bool)
        for key, (c0, n) in rings.columns.items():
            rows = np.arange(step0, step0 + m) % rings.slots
            assert np.array_equal(got[:, c0:c0 + n], ref[key][rows]), (interval, key)
            ref[key][rows] = 0.0
            pad[c0:c0 + n] = False
        assert not got[:, pad].any()  # the padding columns stay zero
        if interval == 30:  # a checkpoint/restore in the middle keeps the sums exact
            rings.restore(rings.snapshot(), step0 + m)
        count = int(rng.integers(0, 60))
        spikes = SpikeBatch(rng.integers(0, n_total, count), step0 + rng.integers(0, m, count),
                            rng.random(count)).sorted()
        rings.deliver(spikes)
        _reference_deliver(net, weights, rings.slots, ref, spikes)
    rings.take(60 * m, m)  # clears the last epoch's rows, as the reference did
    for key in ref:
        assert np.array_equal(rings.rings[key], ref[key]), key


def test_restore_moves_rows_by_arrival_step_from_another_slot_count() -> None:
    """A checkpoint's rings keep their meaning (row = arrival step mod slots) when read back into
    a buffer of another slot count (rings written before the slots became a multiple of the
    interval); one with too few slots for the delays is refused."""
    net = build_network(parse_spec(tomllib.loads(SMALL_COBAHH + EXTRA)))
    m, step = 10, 70
    rings = RingBuffers(net, m)
    rng = np.random.default_rng(3)
    old_slots = rings.slots - m + 1  # max delay + interval + 1, the earlier rule
    pending = {k: rng.random((old_slots - 1, v.shape[1])) for k, v in rings.rings.items()}  # arrivals step..
    saved = {}
    for k, p in pending.items():
        saved[k] = np.zeros((old_slots, p.shape[1]))
        saved[k][(step + np.arange(p.shape[0])) % old_slots] = p
    rings.restore(saved, step)
    for k, p in pending.items():
        assert np.array_equal(rings.rings[k][(step + np.arange(p.shape[0])) % rings.slots], p), k
        others = np.ones(rings.slots, bool)
        others[(step + np.arange(p.shape[0])) % rings.slots] = False
        assert not rings.rings[k][others].any(), k  # every other row empty
    too_few = {k: v[:m] for k, v in saved.items()}
    with pytest.raises(ValueError, match="slots"):
        rings.restore(too_few, step)
