"""Result rows of run folders: one ``run.json`` becomes one flat CSV row (total wall over
requeues, per-phase timers, real-time factors, per-population rates)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any


def read_run_json(out_dir: Path) -> dict[str, Any] | None:
    p = out_dir / "run.json"
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


SCALAR_KEYS = ("n_neurons", "n_synapses", "n_spikes", "simulated_ms", "wall_seconds", "steps_per_neuron",
               "ranks", "mode")


def flat_row(run: dict[str, Any] | None) -> dict[str, Any]:
    """run.json -> flat CSV row: the scalar keys plus ``phase_<name>`` seconds and real-time factors."""
    # imported here, not at the top: `cluster-sim status` imports this module and must stay fast
    from cluster_sim.analysis.scaling import CONSTRUCTION_PHASES

    row: dict[str, Any] = {k: "" for k in SCALAR_KEYS}
    if not run:
        return row
    for k in SCALAR_KEYS:
        if k in run:
            row[k] = run[k]
    # After requeues run.json's wall_seconds is the last incarnation only; studies use the total
    # over all incarnations (wall_seconds_total, written by the engine), the last kept beside it.
    if isinstance(run.get("wall_seconds_total"), (int, float)):
        row["wall_seconds_last"] = run.get("wall_seconds", "")
        row["wall_seconds"] = run["wall_seconds_total"]
        row["restarts"] = run.get("restarts", "")
    for pop, hz in sorted((run.get("rates_hz") or {}).items()):  # per-population rates, not only counts
        if isinstance(hz, (int, float)):
            row[f"rate_hz_{pop}"] = hz
    sim_s = float(run.get("simulated_ms") or 0) / 1000.0
    if sim_s > 0 and isinstance(row.get("wall_seconds"), (int, float)):
        row["real_time_factor"] = row["wall_seconds"] / sim_s
    phases = {ph: sec for ph, sec in (run.get("phases") or {}).items() if isinstance(sec, (int, float))}
    for ph, sec in sorted(phases.items()):
        row[f"phase_{ph}"] = sec
        if sim_s > 0:
            row[f"rtf_{ph}"] = sec / sim_s
    if phases:  # network construction kept apart from state propagation (beNNch)
        row["construction_s"] = sum(sec for ph, sec in phases.items() if ph in CONSTRUCTION_PHASES)
        row["propagation_s"] = sum(sec for ph, sec in phases.items() if ph not in CONSTRUCTION_PHASES)
    return row


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text; the columns are the union of the rows' keys, in first-seen order."""
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in cols})
    return buf.getvalue()
