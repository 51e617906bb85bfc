"""The run folder: one durable home for a submission, shaped like submitit's Job.

A run folder ``<runs>/<name>-<uuid8>/`` holds the spec copy (``job.toml``), the rendered
script(s), ``manifest.json`` (written atomically; the source of truth for which jobs belong to
the folder), ``logs/``, ``out/`` (what ``cluster-sim run`` writes), ``provenance/`` and, after
``collect``, ``results/``. Arrays put each task under ``tasks/<i>/``; studies put each member
under ``members/<name>/``.

:class:`RunFolder` creates the folder, writes spec/script/manifest, submits and records job ids,
and answers ``.status()``, ``.wait()``, ``.cancel()`` and ``.collect()``. Sweeps and studies
subclass it for their own ``collect``; :func:`cluster_sim.deploy.runs.open_run` picks the class
from the manifest. This module imports nothing of sweeps, studies or the CLI.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import os
import shutil
import tempfile
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cluster_sim.deploy import _validate as v
from cluster_sim.deploy import render as R
from cluster_sim.deploy.results import csv_text, flat_row, read_run_json
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


def check_spec_file(spec: Path) -> Path:
    """The job spec's path, once it exists, is a writable-into-a-script path and parses as TOML."""
    spec = v.path("job spec", spec, must_exist=True)
    try:
        tomllib.loads(spec.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("job spec", str(spec), f"is not valid TOML: {e}", "fix the syntax at the line shown") from e
    return spec


# ---------------------------------------------------------------------------------------------
# what a submission needs besides its file
@dataclass(frozen=True)
class SubmitOptions:
    """Everything ``cluster-sim submit|sweep|scale`` needs besides the spec or sweep/study file."""

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


@dataclass
class Submitted:
    """What a submission did (or, dry-run, would do): the folder, the script text, job ids."""

    run_dir: Path
    script: str
    job_ids: list[str]
    dry_run: bool
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# status of the units (the run, array tasks, study members)
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


# ---------------------------------------------------------------------------------------------
class RunFolder:
    """A run folder and the jobs recorded in its manifest (submitit's Job over a durable folder).

    ``RunFolder.new(runs_dir, name)`` picks the path and id (nothing on disk yet: a dry run
    renders with them and stops); :meth:`create` writes spec and manifest; :meth:`submit`
    sbatches a script and records its job id(s); :meth:`open` reads an existing folder.
    """

    kind = "run"

    def __init__(self, path: Path, manifest: dict[str, Any] | None = None, *, uid: str = "") -> None:
        self.path = Path(path)
        self.manifest: dict[str, Any] = manifest if manifest is not None else {}
        self.uuid = uid or str(self.manifest.get("uuid", ""))
        self._created_here = False  # this process made the folder: a refused sbatch removes it
        self._queued: list[str] = []  # jobs this process queued (cancelled if a later sbatch fails)

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def new(cls, runs_dir: Path, name: str) -> "RunFolder":
        v.name("--name", name)
        uid = uuid.uuid4().hex[:8]
        return cls(v.path("--runs-dir", Path(runs_dir)) / f"{name}-{uid}", uid=uid)

    @classmethod
    def open(cls, path: Path) -> "RunFolder":
        path = Path(path).resolve()
        return cls(path, read_manifest(path))

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name.rsplit("-", 1)[0])

    @property
    def comment(self) -> str:
        """The ``--comment`` every job of the folder carries (find them with squeue/sacct)."""
        return f"cluster-sim-{self.uuid}"

    def create(self, spec: Path, *, site: str, files: Mapping[str, Path] | None = None, dirs: Sequence[str] = (),
               **fields: Any) -> None:
        """Make the folder with ``logs/``, the spec as ``job.toml``, ``files`` (name -> source)
        and ``dirs``; write the manifest (``fields`` added to it)."""
        self.path.mkdir(parents=True)
        self._created_here = True
        (self.path / "logs").mkdir()
        shutil.copy2(spec, self.path / "job.toml")
        for dest, src in (files or {}).items():
            shutil.copy2(src, self.path / dest)
        for d in dirs:
            (self.path / d).mkdir(parents=True, exist_ok=True)
        self.manifest = {"schema": SCHEMA, "kind": self.kind, "name": self.path.name.rsplit("-", 1)[0],
                         "uuid": self.uuid, "run_dir": str(self.path), "created_utc": now_utc(), "site": site,
                         "spec_source": str(spec), "spec": "job.toml", **fields, "jobs": [], "units": []}
        self.save()

    def save(self) -> None:
        write_json(self.path / MANIFEST, self.manifest)

    def write_text(self, rel: str, text: str) -> Path:
        p = self.path / rel
        write_atomic(p, text)
        return p

    def submit(self, script: str, *, role: str, unit: str = "", unit_dir: str = ".", tasks: int = 0,
               replaces: str = "", sbatch_args: Sequence[str] = (), runner: Runner = _run, **fields: Any) -> str:
        """sbatch ``script`` (relative to the folder) and record the job in the manifest.

        The job becomes unit ``unit`` (dir ``unit_dir``), or array units ``task-<i>`` (dirs
        ``tasks/<i>``) when ``tasks`` > 0, or replaces the unit whose job was ``replaces`` (a
        resubmission). If sbatch refuses a folder this process created, the jobs it already
        queued are cancelled and the folder is removed, so no half-submitted folder is left for
        ``status`` to misreport; the error carries sbatch's message.
        """
        try:
            jid = sbatch(self.path / script, runner=runner, extra=sbatch_args)
        except SubmissionError as e:
            if not self._created_here:
                raise SubmissionError(f"{e}; {self.path} is unchanged") from e
            if self._queued:
                try:
                    scancel(self._queued, runner=runner)
                except SubmissionError:
                    pass  # best effort: the message below names what was queued
            shutil.rmtree(self.path, ignore_errors=True)
            queued = (f"cancelled the {len(self._queued)} job(s) it had queued ({' '.join(self._queued)})"
                      if self._queued else "nothing was queued")
            raise SubmissionError(f"{e}; {queued} and removed {self.path}") from e
        self._queued.append(jid)
        if tasks:
            fields["tasks"] = tasks
        self.manifest["jobs"].append({"job_id": jid, "role": role, "script": script, **fields})
        us = self.manifest["units"]
        if replaces:
            for u in us:
                if u.get("job") == replaces:
                    u["job"] = jid
        elif tasks:
            us += [{"unit": f"task-{i}", "dir": f"tasks/{i}", "job": f"{jid}_{i}"} for i in range(tasks)]
        else:
            us.append({"unit": unit or role, "dir": unit_dir, "job": jid})
        self.save()
        ids = list(dict.fromkeys(str(u["job"]).split("_")[0] for u in us if u.get("job")))
        write_atomic(self.path / "job_id", "\n".join(ids) + "\n")
        return jid

    # -- tracking ---------------------------------------------------------------------------
    def units(self) -> list[dict[str, Any]]:
        return [u for u in self.manifest.get("units", []) if u.get("job")]

    def status(self, *, watcher: Watcher | None = None, tail_lines: int = 20) -> list[UnitStatus]:
        """Current state of every unit; one scheduler query for all of them."""
        us = self.units()
        w = watcher or Watcher()
        infos = w.query([u["job"] for u in us])
        out: list[UnitStatus] = []
        for u in us:
            info: JobInfo = infos[u["job"]]
            d = self.path / u["dir"]
            # An exit code exists only once the job has ended (scontrol shows 0:0 while it pends or runs).
            state, code = info.state, (info.exit_code if info.state.is_terminal else None)
            if state is JobState.UNKNOWN:  # scheduler forgot the job: the batch script's exitcode file
                ec = _exitcode_file(d)
                if ec is not None and not ec[1]:
                    state, code = (JobState.COMPLETED if ec[0] == 0 else JobState.FAILED), ec[0]
            log = find_log(self.path, d, u["job"])
            out.append(UnitStatus(u["unit"], u["job"], state, code, info.restarts, info.source or "exitcode-file", d,
                                  log, tail(log, tail_lines) if state.is_failure else "",
                                  info.reason if state is JobState.PENDING and info.reason not in ("None", "(null)")
                                  else ""))
        return out

    def state(self, *, watcher: Watcher | None = None) -> JobState:
        return overall(self.status(watcher=watcher, tail_lines=0))

    def done(self, *, watcher: Watcher | None = None) -> bool:
        """Every unit has ended (in any state)."""
        return not any(s.state.is_active for s in self.status(watcher=watcher, tail_lines=0))

    def wait(self, *, timeout_s: float = 3600.0, delay_s: float = 5.0, watcher: Watcher | None = None,
             settle_s: float = 1.0) -> list[UnitStatus]:
        """Block until every unit has ended, or ``timeout_s``.

        An end state counts once two polls ``settle_s`` apart agree: around a requeue SLURM shows
        the old incarnation ending (e.g. CANCELLED "due to job requeue") before the job is PENDING again.
        """
        w = watcher or Watcher()
        ids = [u["job"] for u in self.units()]
        deadline = time.monotonic() + timeout_s
        previous: list[tuple[str, JobState]] | None = None
        while True:
            w.wait(ids, timeout_s=max(0.0, deadline - time.monotonic()), delay_s=delay_s)
            sts = self.status(watcher=w)
            now = [(s.unit, s.state) for s in sts]
            if time.monotonic() >= deadline or (previous == now and not any(s.state.is_active for s in sts)):
                return sts
            previous = now if not any(s.state.is_active for s in sts) else None
            time.sleep(settle_s)

    def raise_on_failure(self, sts: list[UnitStatus]) -> None:
        if any(s.state.is_failure for s in sts):
            raise JobFailedError(format_status(self.path, sts))

    def cancel(self, *, runner: Runner = _run) -> list[str]:
        ids = sorted({j["job_id"] for j in self.manifest.get("jobs", []) if j.get("job_id")})
        scancel(ids, runner=runner)
        return ids

    # -- results ----------------------------------------------------------------------------
    def collect(self, *, watcher: Watcher | None = None) -> Path:
        """Gather the run's ``run.json`` and timers into ``results/summary.{csv,json}``."""
        if self.manifest.get("kind") != self.kind:
            raise ConfigError("run folder", str(self.path), f"is a {self.manifest.get('kind')!r} folder, not a "
                              f"{self.kind!r} one", "open it with cluster_sim.deploy.runs.open_run(path)")
        sts = self.status(watcher=watcher)
        res = self.path / "results"
        run = read_run_json(self.path / "out")
        row = {"unit": "run", "job_id": sts[0].job_id if sts else "", "state": overall(sts).value,
               "restarts": sts[0].restarts if sts else "", **flat_row(run)}
        write_atomic(res / "summary.csv", csv_text([row]))
        prov = self.path / "provenance"
        write_json(res / "summary.json", {"manifest": self.manifest, "state": overall(sts).value, "run": run,
                                          "provenance": sorted(str(p.relative_to(self.path)) for p in prov.rglob("*")
                                                               if p.is_file()) if prov.is_dir() else []})
        return res
