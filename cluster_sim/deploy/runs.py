"""Run folders: submit, track, cancel and collect one batch job, an array, or a study.

A run folder ``<runs>/<name>-<uuid8>/`` holds the spec copy (``job.toml``), the rendered script
(``job.sbatch``), ``manifest.json`` (written atomically; the source of truth for which jobs belong
to the folder), ``logs/``, ``out/`` (what ``cluster-sim run`` writes), ``provenance/`` and, after
``collect``, ``results/``. Arrays put each task under ``tasks/<i>/``; studies put each member
under ``members/<name>/``.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import shutil
import tempfile
import time
import tomllib
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cluster_sim.deploy import _validate as v
from cluster_sim.deploy import render as R
from cluster_sim.deploy.sites import SiteProfile
from cluster_sim.deploy.slurm import JobInfo, JobState, Runner, Watcher, _run, sbatch, scancel
from cluster_sim.errors import ConfigError, JobFailedError, SubmissionError

MANIFEST = "manifest.json"
SCHEMA = 1


# ---------------------------------------------------------------------------------------------
# files
def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    p = Path(run_dir) / MANIFEST
    if not p.is_file():
        raise ConfigError("run folder", str(run_dir), f"has no {MANIFEST}",
                          "pass a folder created by cluster-sim submit/sweep/scale (runs/<name>-<id>)")
    return json.loads(p.read_text(encoding="utf-8"))


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_dir(runs_dir: Path, name: str) -> tuple[Path, str]:
    v.name("--name", name)
    uid = uuid.uuid4().hex[:8]
    return v.path("--runs-dir", Path(runs_dir)) / f"{name}-{uid}", uid


def default_runs_dir(site: SiteProfile | None = None) -> Path:
    """``$CLUSTER_SIM_RUNS``, else ``<site scratch>/cluster-sim/runs``, else ``./runs``."""
    if os.environ.get("CLUSTER_SIM_RUNS"):
        return Path(os.environ["CLUSTER_SIM_RUNS"])
    if site is not None and site.scratch:
        return Path(site.scratch) / "cluster-sim" / "runs"
    return Path("runs")


def safe_name(stem: str) -> str:
    """A job name derived from a file stem: disallowed characters become '-'."""
    out = "".join(c if c.isalnum() or c in "_.+-" else "-" for c in stem).strip("-.") or "run"
    return out[:60] if out[0].isalnum() else "r" + out[:59]


def load_spec(spec: Path) -> Path:
    spec = v.path("job spec", spec, must_exist=True)
    try:
        tomllib.loads(spec.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("job spec", str(spec), f"is not valid TOML: {e}", "fix the file") from e
    return spec


# ---------------------------------------------------------------------------------------------
# submit
@dataclass(frozen=True)
class SubmitOptions:
    """Everything ``cluster-sim submit`` needs besides the spec."""

    site: SiteProfile
    resources: R.JobResources
    sets: tuple[tuple[str, str], ...] = ()
    duration_ms: float | None = None
    checkpoint_every_ms: float | None = None
    mode: str = ""
    name: str = ""
    runs_dir: Path = field(default_factory=default_runs_dir)
    container: Path | None = None
    payload: tuple[str, ...] = ()
    validate: bool = True

    def container_obj(self, *, must_exist: bool) -> R.Container | None:
        if self.container is None:
            return None
        img = v.path("--container", self.container, must_exist=must_exist)
        binds = tuple(self.site.container_binds)
        return R.Container(img, self.site.container_runtime, binds, gpu=self.resources.gpus_per_node > 0)

    def command(self) -> list[str] | None:
        return list(self.payload) or None


def sbatch_into(run_dir: Path, script: Path, submitted: list[str], *, runner: Runner = _run) -> str:
    """sbatch one script of a new run folder. If sbatch refuses it, cancel what this submission
    already queued (earlier study members) and remove the folder, so no half-submitted folder is
    left for `status` to misreport; the error carries sbatch's message."""
    try:
        jid = sbatch(script, runner=runner)
    except SubmissionError as e:
        if submitted:
            try:
                scancel(submitted, runner=runner)
            except SubmissionError:
                pass  # best effort: the message below names what was queued
        shutil.rmtree(run_dir, ignore_errors=True)
        queued = f"cancelled the {len(submitted)} job(s) it had queued ({' '.join(submitted)})" if submitted \
            else "nothing was queued"
        raise SubmissionError(f"{e}; {queued} and removed {run_dir}") from e
    submitted.append(jid)
    return jid


@dataclass
class Submitted:
    run_dir: Path
    script: str
    job_ids: list[str]
    dry_run: bool


def submit_run(spec: Path, opts: SubmitOptions, *, dry_run: bool = False, runner: Runner = _run) -> Submitted:
    """Render, write the run folder and ``sbatch --parsable`` one run (or just render, dry-run)."""
    spec = load_spec(spec)
    name = opts.name or safe_name(spec.stem)
    run_dir, uid = new_run_dir(opts.runs_dir, name)
    cmd = R.RunCommand(run_dir / "job.toml", opts.sets, opts.duration_ms, opts.checkpoint_every_ms, opts.mode)
    rendered = R.render("run.sbatch.j2", opts.site, opts.resources, cmd, job_name=name, run_dir=run_dir,
                        comment=f"cluster-sim-{uid}", container=opts.container_obj(must_exist=not dry_run),
                        command=opts.command())
    # a dry run refuses what a real submit would refuse
    if opts.validate and not opts.payload:
        from cluster_sim.deploy.spec_check import Variant, check_all

        check_all(spec, [Variant("run", opts.sets, opts.duration_ms, opts.mode, opts.resources.ranks)])
    if dry_run:
        return Submitted(run_dir, rendered.text, [], True)
    run_dir.mkdir(parents=True)
    (run_dir / "logs").mkdir()
    shutil.copy2(spec, run_dir / "job.toml")
    script = run_dir / "job.sbatch"
    write_atomic(script, rendered.text)
    manifest = {
        "schema": SCHEMA, "kind": "run", "name": name, "uuid": uid, "run_dir": str(run_dir),
        "created_utc": now_utc(), "site": opts.site.name, "spec_source": str(spec), "spec": "job.toml",
        "script": "job.sbatch", "resources": asdict(opts.resources), "run_args": R.run_args(cmd, opts.resources),
        "container": str(opts.container) if opts.container else None, "payload": list(opts.payload),
        "jobs": [], "units": [{"unit": "run", "dir": ".", "job": None}],
    }
    write_json(run_dir / MANIFEST, manifest)
    job_id = sbatch_into(run_dir, script, [], runner=runner)
    manifest["jobs"] = [{"job_id": job_id, "role": "run", "script": "job.sbatch"}]
    manifest["units"] = [{"unit": "run", "dir": ".", "job": job_id}]
    write_json(run_dir / MANIFEST, manifest)
    write_atomic(run_dir / "job_id", job_id + "\n")
    return Submitted(run_dir, rendered.text, [job_id], False)


# ---------------------------------------------------------------------------------------------
# status
@dataclass(frozen=True)
class UnitStatus:
    """One schedulable unit of a run folder: the run, an array task or a study member."""

    unit: str
    job_id: str
    state: JobState
    exit_code: int | None
    restarts: int | None
    source: str
    dir: Path
    log: Path | None
    log_tail: str = ""
    reason: str = ""  # SLURM's pending reason (Dependency, BeginTime after a requeue, Resources, ...)


def _exitcode_file(d: Path) -> tuple[int, bool] | None:
    p = d / "exitcode"
    try:
        words = p.read_text(encoding="utf-8").split()
        return int(words[0]), "requeued" in words
    except (OSError, ValueError, IndexError):
        return None


def find_log(run_dir: Path, unit_dir: Path, job_id: str) -> Path | None:
    cands: list[Path] = []
    for d in {run_dir / "logs", unit_dir / "logs"}:
        if d.is_dir():
            cands += [p for p in d.iterdir() if p.name.endswith(f"-{job_id}.out")]
    return sorted(cands)[0] if cands else None


def tail(path: Path | None, lines: int = 20) -> str:
    if path is None or not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 64 * 1024))
        data = f.read().decode("utf-8", "replace")
    return "\n".join(data.splitlines()[-lines:])


def units(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [u for u in manifest.get("units", []) if u.get("job")]


def status(run_dir: Path, *, watcher: Watcher | None = None, tail_lines: int = 20) -> list[UnitStatus]:
    """Current state of every unit in the folder; one scheduler query for all of them."""
    run_dir = Path(run_dir).resolve()
    man = read_manifest(run_dir)
    us = units(man)
    w = watcher or Watcher()
    infos = w.query([u["job"] for u in us])
    out: list[UnitStatus] = []
    for u in us:
        info: JobInfo = infos[u["job"]]
        d = run_dir / u["dir"]
        # An exit code exists only once the job has ended (scontrol shows 0:0 while it pends or runs).
        state, code = info.state, (info.exit_code if info.state.is_terminal else None)
        if state is JobState.UNKNOWN:  # scheduler forgot the job: the batch script's exitcode file
            ec = _exitcode_file(d)
            if ec is not None and not ec[1]:
                state, code = (JobState.COMPLETED if ec[0] == 0 else JobState.FAILED), ec[0]
        log = find_log(run_dir, d, u["job"])
        out.append(UnitStatus(u["unit"], u["job"], state, code, info.restarts, info.source or "exitcode-file", d,
                              log, tail(log, tail_lines) if state.is_failure else "",
                              info.reason if state is JobState.PENDING and info.reason not in ("None", "(null)") else ""))
    return out


def overall(states: Iterable[UnitStatus]) -> JobState:
    sts = list(states)
    if not sts:
        return JobState.UNKNOWN
    for s in sts:
        if s.state.is_active:
            return JobState.RUNNING if any(x.state is JobState.RUNNING for x in sts) else s.state
    for s in sts:
        if s.state.is_failure:
            return s.state
    if any(s.state is JobState.UNKNOWN for s in sts):
        return JobState.UNKNOWN
    return JobState.COMPLETED


def format_status(run_dir: Path, sts: list[UnitStatus]) -> str:
    buf = io.StringIO()
    buf.write(f"{run_dir}: {overall(sts).value}\n")
    for s in sts:
        code = "" if s.exit_code is None else f" exit={s.exit_code}"
        rs = "" if not s.restarts else f" restarts={s.restarts}"
        why = f" ({s.reason})" if s.reason else ""
        buf.write(f"  {s.unit:<24} job {s.job_id:<12} {s.state.value}{why}{code}{rs}\n")
        if s.state.is_failure:
            buf.write(f"    log: {s.log or '(no log file found)'}\n")
            for line in s.log_tail.splitlines():
                buf.write(f"    | {line}\n")
    return buf.getvalue()


def wait(run_dir: Path, *, timeout_s: float = 3600.0, delay_s: float = 5.0,
         watcher: Watcher | None = None, settle_s: float = 1.0) -> list[UnitStatus]:
    """Block until every unit has ended, or ``timeout_s``.

    An end state counts once two polls ``settle_s`` apart agree: around a requeue SLURM shows
    the old incarnation ending (e.g. CANCELLED "due to job requeue") before the job is PENDING again.
    """
    man = read_manifest(Path(run_dir))
    w = watcher or Watcher()
    ids = [u["job"] for u in units(man)]
    deadline = time.monotonic() + timeout_s
    previous: list[tuple[str, JobState]] | None = None
    while True:
        w.wait(ids, timeout_s=max(0.0, deadline - time.monotonic()), delay_s=delay_s)
        sts = status(run_dir, watcher=w)
        now = [(s.unit, s.state) for s in sts]
        if time.monotonic() >= deadline or (previous == now and not any(s.state.is_active for s in sts)):
            return sts
        previous = now if not any(s.state.is_active for s in sts) else None
        time.sleep(settle_s)


def raise_on_failure(run_dir: Path, sts: list[UnitStatus]) -> None:
    bad = [s for s in sts if s.state.is_failure]
    if bad:
        raise JobFailedError(format_status(run_dir, sts))


def cancel(run_dir: Path, *, runner: Runner = _run) -> list[str]:
    man = read_manifest(Path(run_dir))
    ids = sorted({j["job_id"] for j in man.get("jobs", []) if j.get("job_id")})
    scancel(ids, runner=runner)
    return ids


# ---------------------------------------------------------------------------------------------
# collect
def read_run_json(out_dir: Path) -> dict[str, Any] | None:
    p = out_dir / "run.json"
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


CONSTRUCTION_PHASES = ("startup", "build")
SCALAR_KEYS = ("n_neurons", "n_synapses", "n_spikes", "simulated_ms", "wall_seconds", "steps_per_neuron",
               "ranks", "mode")


def flat_row(run: dict[str, Any] | None) -> dict[str, Any]:
    """run.json -> flat CSV row: the scalar keys plus ``phase_<name>`` seconds and real-time factors."""
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


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
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
    write_atomic(path, buf.getvalue())


def collect(run_dir: Path, *, watcher: Watcher | None = None) -> Path:
    """Gather results and timers into ``<run>/results/``; dispatches on the manifest kind."""
    run_dir = Path(run_dir).resolve()
    man = read_manifest(run_dir)
    kind = man.get("kind")
    if kind == "sweep":
        from cluster_sim.deploy.sweep import collect_sweep

        return collect_sweep(run_dir, man, watcher=watcher)
    if kind == "study":
        from cluster_sim.deploy.study import collect_study

        return collect_study(run_dir, man, watcher=watcher)
    sts = status(run_dir, watcher=watcher)
    res = run_dir / "results"
    run = read_run_json(run_dir / "out")
    row = {"unit": "run", "job_id": sts[0].job_id if sts else "", "state": overall(sts).value,
           "restarts": sts[0].restarts if sts else "", **flat_row(run)}
    write_csv(res / "summary.csv", [row])
    write_json(res / "summary.json", {"manifest": man, "state": overall(sts).value, "run": run,
                                      "provenance": sorted(str(p.relative_to(run_dir))
                                                           for p in (run_dir / "provenance").rglob("*") if p.is_file())
                                      if (run_dir / "provenance").is_dir() else []})
    return res
