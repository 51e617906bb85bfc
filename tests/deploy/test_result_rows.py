"""run.json -> study/sweep rows: total wall over requeues, per-population rates."""
from __future__ import annotations

from cluster_sim.deploy.results import flat_row
from cluster_sim.analysis.scaling import aggregate

RUN = {"n_spikes": 30, "simulated_ms": 1000.0, "wall_seconds": 2.0, "wall_seconds_total": 10.0, "restarts": 2,
       "rates_hz": {"E": 1.5, "I": 6.0}, "mode": "bsp", "ranks": 1,
       "incarnations": [{"wall_seconds": 4.0}, {"wall_seconds": 4.0}, {"wall_seconds": 2.0}]}


def test_requeued_run_counts_every_incarnation() -> None:
    row = flat_row(RUN)
    assert row["wall_seconds"] == 10.0 and row["wall_seconds_last"] == 2.0 and row["restarts"] == 2
    assert row["real_time_factor"] == 10.0
    assert (row["rate_hz_E"], row["rate_hz_I"]) == (1.5, 6.0)


def test_older_run_json_falls_back_to_wall_seconds() -> None:
    old = {k: val for k, val in RUN.items() if k not in ("wall_seconds_total", "restarts", "incarnations")}
    assert flat_row(old)["wall_seconds"] == 2.0 and "wall_seconds_last" not in flat_row(old)


def test_speedup_uses_total_wall() -> None:
    one = {**flat_row(RUN), "mode": "bsp", "nodes": 1, "ranks_per_node": 1, "state": "COMPLETED"}
    two = {**flat_row({**RUN, "wall_seconds": 5.0, "wall_seconds_total": 5.0, "restarts": 0}),
           "mode": "bsp", "nodes": 1, "ranks_per_node": 2, "state": "COMPLETED"}
    agg = aggregate([one, two], "strong")
    assert [a["speedup"] for a in agg] == [1.0, 2.0]  # 10 s (3 incarnations) -> 5 s, not 2 s -> 5 s
