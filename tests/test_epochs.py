"""BSP epochs: intervals split in two where spikes are delivered, so that the kernel integrates
epoch e+1 while the host exchanges and delivers epoch e (engine/bsp.py)."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cluster_sim.engine.bsp import epoch_lengths, next_epoch


@pytest.mark.parametrize("split", [True, False])
def test_epochs_cover_the_run_and_never_need_the_previous_epochs_spikes(split: bool) -> None:
    for m in range(1, 14):
        for start in range(0, 3 * m + 2):
            for total in range(start + 1, start + 4 * m + 3):
                seq, pos = [], start
                while pos < total:
                    n = next_epoch(m, split, pos, total)
                    assert n >= 1
                    seq.append((pos, n))
                    pos += n
                assert pos == total
                # Interval boundaries (multiples of m) are epoch boundaries: checkpoints stay there.
                starts = {p for p, _ in seq}
                assert all(b in starts for b in range(start + (-start) % m, total, m))
                if split:
                    # A spike in step k of epoch e arrives at k + 1 + d >= k + 1 + m: after epoch e+1.
                    for (p0, n0), (_, n1) in zip(seq, seq[1:]):
                        assert n0 + n1 <= m + 1, (m, seq)
                else:
                    assert all(n == min(m, total - p) or p % m for p, n in seq)
                assert {n for _, n in seq} <= set(epoch_lengths(m, split, start, total))


def test_next_epoch_is_launched_before_this_epochs_spikes_are_delivered(tmp_path: Path, small_cobahh_job: Path) -> None:
    """The pipeline: the kernel call for steps [s+5, s+10) is launched (its inputs taken from the
    rings and handed to the kernel thread) before the spikes of [s, s+5) are delivered; the
    results are those of runs on other rank counts (tests/test_mpi.py)."""
    from cluster_sim.engine import bsp, delivery
    from cluster_sim.run import simulate
    from cluster_sim.spec import load_spec

    log: list[tuple[str, int]] = []
    lock = threading.Lock()
    orig_take, orig_deliver = delivery.RingBuffers.take, delivery.RingBuffers.deliver

    def take(self, step0, n_steps):  # type: ignore[no-untyped-def]
        with lock:
            log.append(("launch", step0))
        return orig_take(self, step0, n_steps)

    def deliver(self, spikes):  # type: ignore[no-untyped-def]
        with lock:
            log.append(("deliver", int(spikes.step.min()) if len(spikes) else -1))
        return orig_deliver(self, spikes)

    mp = pytest.MonkeyPatch()
    mp.setattr(delivery.RingBuffers, "take", take)
    mp.setattr(delivery.RingBuffers, "deliver", deliver)
    try:
        res = simulate(load_spec(small_cobahh_job, ["simulation.duration_ms=20", 'engine.overlap="on"']), tmp_path / "o",
                   progress=False)
    finally:
        mp.undo()
    assert res.info["epoch_steps"] == 5 and res.info["interval_steps"] == 10
    runs = [s for k, s in log if k == "launch"]
    assert runs[-4:] == [180, 185, 190, 195]
    # Every epoch after the first: its kernel call came before the previous epoch's delivery.
    delivered = [(i, s) for i, (k, s) in enumerate(log) if k == "deliver" and s >= 0]
    assert len(delivered) > 10
    for i, s in delivered:
        ep = s - s % 5
        if ep + 5 < 200:
            assert log.index(("launch", ep + 5)) < i, (s, log[max(0, i - 4):i + 1])
    assert bsp.next_epoch(10, True, 0, 200) == 5


def test_overlap_off_gives_bitwise_the_same_spikes(tmp_path: Path, small_cobahh_job: Path) -> None:
    """engine.overlap = "off" (whole intervals, one at a time) vs the pipelined half-interval
    epochs, with a checkpoint in between: the same spikes to the bit."""
    import h5py
    import numpy as np

    from cluster_sim.run import simulate
    from cluster_sim.spec import load_spec

    out = {}
    for overlap in ("on", "off"):
        spec = load_spec(small_cobahh_job, ["simulation.duration_ms=40", f'engine.overlap="{overlap}"'])
        res = simulate(spec, tmp_path / overlap, progress=False, checkpoint_every_ms=20.0)
        assert res.info["epoch_steps"] == (5 if overlap == "on" else 10)
        with h5py.File(tmp_path / overlap / "spikes.h5") as f:
            out[overlap] = {p: (f["spikes"][p]["timestamps"][:], f["spikes"][p]["node_ids"][:]) for p in f["spikes"]}
    assert sum(t.size for t, _ in out["on"].values()) > 100
    for pop, (t, ids) in out["on"].items():
        assert np.array_equal(t, out["off"][pop][0]) and np.array_equal(ids, out["off"][pop][1])


@pytest.mark.parametrize("setting,device,expected", [("auto", "/CPU:0", False), ("auto", "/GPU:0", True),
                                                     ("on", "/CPU:0", True), ("off", "/GPU:0", False)])
def test_overlap_is_on_where_the_kernel_runs_on_a_gpu(setting: str, device: str, expected: bool) -> None:
    from cluster_sim.engine.bsp import overlap_epochs

    assert overlap_epochs(setting, device) is expected
