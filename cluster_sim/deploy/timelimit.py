"""Is ``--time`` long enough to checkpoint at all?

A requeueable job gets USR1 ``signal_seconds`` before its limit and writes a checkpoint at the
next checkpoint interval. If start-up (imports, network build, XLA compile) plus one interval
does not fit before that signal, every incarnation is killed before it saves anything and the
run never advances. The start-up and the wall time per simulated millisecond are measured: the
slowest earlier run under the same runs directory (the same spec preferred) gives them; with no
earlier run, start-up is taken as :data:`UNMEASURED_STARTUP_S` and the interval is not estimated.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from cluster_sim.deploy import _validate as v
from cluster_sim.deploy.render import JobResources
from cluster_sim.deploy.sites import SiteProfile

UNMEASURED_STARTUP_S = 60.0  # imports + XLA compile of a small network on one CPU core, rounded up
_MAX_FOLDERS = 50  # the newest folders only: status-speed, not a survey of years of runs


@dataclass(frozen=True)
class Measured:
    """Worst case over earlier runs: start-up seconds and wall seconds per simulated ms."""

    startup_s: float
    wall_per_ms: float | None
    source: str  # the run.json it came from, or "" (not measured)


def _run_jsons(folder: Path) -> Iterator[Path]:
    for pattern in ("out/run.json", "tasks/*/out/run.json", "members/*/out/run.json"):
        yield from folder.glob(pattern)


def measure(runs_dir: Path, spec: Path) -> Measured:
    """The slowest start-up and propagation seen in ``runs_dir``'s run folders, preferring those
    made from ``spec``; :data:`UNMEASURED_STARTUP_S` when there are none."""
    folders = sorted((p for p in Path(runs_dir).glob("*/manifest.json")), key=lambda p: p.stat().st_mtime)[-_MAX_FOLDERS:]
    same: list[Any] = []
    other: list[Any] = []
    for man_path in folders:
        try:
            man = json.loads(man_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        (same if man.get("spec_source") == str(spec) else other).append(man_path.parent)
    for group in (same, other):
        seen: list[tuple[float, float, str]] = []  # start-up s, wall s per simulated ms, source
        for folder in group:
            for rj in _run_jsons(folder):
                try:
                    info = json.loads(rj.read_text(encoding="utf-8"))
                    phases = info.get("phases") or {}
                    startup = float(phases.get("startup", 0.0)) + float(phases.get("build", 0.0))
                    sim_ms = float(info.get("simulated_ms") or 0.0)
                    wall = float(info.get("wall_seconds_total", info.get("wall_seconds", 0.0)))
                except (OSError, ValueError, TypeError, AttributeError):
                    continue
                seen.append((startup, (wall - startup) / sim_ms if sim_ms > 0 and wall > startup else 0.0, str(rj)))
        if seen:
            worst = max(seen)
            return Measured(worst[0], max(x[1] for x in seen) or None, worst[2])
    return Measured(UNMEASURED_STARTUP_S, None, "")


def spec_checkpoint_ms(spec: Path) -> float:
    """``output.checkpoint_every_ms`` of the spec file (0: only on signals)."""
    try:
        raw = tomllib.loads(Path(spec).read_text(encoding="utf-8")).get("output", {}).get("checkpoint_every_ms", 0.0)
        return float(raw)
    except (OSError, ValueError, TypeError, AttributeError, tomllib.TOMLDecodeError):
        return 0.0


def short_time_warning(time: str, signal_seconds: int, checkpoint_every_ms: float | None, measured: Measured) -> str:
    """A warning when start-up plus one checkpoint interval does not fit before the USR1 signal
    (``time - signal_seconds``); "" when it fits."""
    limit_s = v.time_seconds(time)
    usable = limit_s - signal_seconds
    interval_s = (checkpoint_every_ms or 0.0) * measured.wall_per_ms if measured.wall_per_ms else 0.0
    need = measured.startup_s + interval_s
    if need <= usable:
        return ""
    where = (f"measured in {measured.source}" if measured.source else
             f"not measured yet: {UNMEASURED_STARTUP_S:g} s assumed")
    interval = (f" + one checkpoint interval ({checkpoint_every_ms:g} ms simulated ≈ {interval_s:.0f} s)"
                if interval_s else "")
    return (f"--time {time} leaves {usable:.0f} s before the checkpoint signal (USR1 {signal_seconds} s before the "
            f"limit), but start-up ({measured.startup_s:.0f} s, {where}){interval} needs {need:.0f} s: each "
            f"incarnation may be stopped before it writes a checkpoint, and the run would never advance. "
            f"Raise --time to at least {_hms(need + signal_seconds)} or lower --checkpoint-every/--signal-seconds.")


def short_time_warnings(spec: Path, res: JobResources, site: SiteProfile, checkpoint_every_ms: float | None,
                        runs_dir: Path) -> list[str]:
    """The warnings for one submission (none for a job that is not requeued: it never checkpoints
    to continue). ``checkpoint_every_ms`` None means the spec's own interval."""
    if not res.requeue:
        return []
    every = checkpoint_every_ms if checkpoint_every_ms is not None else spec_checkpoint_ms(spec)
    signal = res.signal_seconds if res.signal_seconds is not None else site.signal_seconds
    w = short_time_warning(res.time, signal, every, measure(runs_dir, spec))
    return [w] if w else []


def _hms(seconds: float) -> str:
    s = int(seconds + 59) // 60 * 60  # whole minutes, rounded up
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:00"
