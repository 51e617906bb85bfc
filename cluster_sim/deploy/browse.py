"""``cluster-sim logs`` and ``cluster-sim runs``: read a run folder's job logs (optionally as they
grow) and list the run folders under a runs directory with their state."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from cluster_sim.deploy.folder import MANIFEST, RunFolder, UnitStatus, find_log, overall
from cluster_sim.deploy.slurm import Watcher
from cluster_sim.errors import ConfigError


def pick_units(run_dir: Path, task: str | None) -> list[dict[str, str]]:
    """Every unit, or the one named by ``task``: an array index (``3`` = task-3), a position, or a unit name."""
    us = RunFolder.open(run_dir).units()
    if task is None:
        return us
    names = [u["unit"] for u in us]
    for cand in (f"task-{task}", task):
        if cand in names:
            return [us[names.index(cand)]]
    if task.isdigit() and int(task) < len(us):
        return [us[int(task)]]
    raise ConfigError("--task", task, f"no such unit in {run_dir}", f"use one of {', '.join(names) or '(none)'}")


def log_of(run_dir: Path, unit: dict[str, str]) -> Path | None:
    return find_log(run_dir, run_dir / unit["dir"], unit["job"])


def follow(path_of: Callable[[], Path | None], out: TextIO, *, done: Callable[[], bool],
           poll_s: float = 1.0, timeout_s: float = 86400.0) -> None:
    """Print the log as it grows until ``done()`` (the job ended) and nothing new arrived."""
    pos = 0
    deadline = time.monotonic() + timeout_s
    while True:
        p = path_of()
        grew = False
        if p is not None and p.is_file():
            with open(p, "rb") as f:
                f.seek(pos)
                data = f.read()
            if data:
                out.write(data.decode("utf-8", "replace"))
                out.flush()
                pos += len(data)
                grew = True
        if (not grew and done()) or time.monotonic() > deadline:
            return
        time.sleep(poll_s)


def run_folders(runs_dir: Path) -> Iterator[Path]:
    if runs_dir.is_dir():
        yield from sorted(p for p in runs_dir.iterdir() if (p / MANIFEST).is_file())


def list_runs(runs_dir: Path, watcher: Watcher | None = None) -> list[tuple[Path, dict[str, Any], list[UnitStatus]]]:
    """(folder, manifest, unit states) for every run folder, newest last."""
    w = watcher or Watcher()
    out = []
    for rd in run_folders(runs_dir):
        folder = RunFolder.open(rd)
        out.append((folder.path, folder.manifest, folder.status(watcher=w, tail_lines=0)))
    out.sort(key=lambda t: t[1].get("created_utc", ""))
    return out


def format_runs(rows: list[tuple[Path, dict[str, Any], list[UnitStatus]]]) -> str:
    if not rows:
        return "(no run folders)\n"
    lines = [f"{'STATE':<11} {'KIND':<6} {'UNITS':>5} {'CREATED (UTC)':<21} FOLDER"]
    for rd, man, sts in rows:
        lines.append(f"{overall(sts).value:<11} {man.get('kind', '?'):<6} {len(sts):>5} "
                     f"{man.get('created_utc', '')[:20]:<21} {rd}")
    return "\n".join(lines) + "\n"
