"""Parameter sweeps as one SLURM job array.

Sweep file (TOML)::

    job = "../jobs/cobahh_small.toml"   # relative to the sweep file
    combine = "product"                 # or "zip"
    max_parallel = 4                    # the k in --array=0-(n-1)%k
    name = "amp-sweep"                  # optional; default: sweep file stem

    [set]                               # optional fixed overrides for every task
    "simulation.duration_ms" = 200

    [resources]                         # optional; command-line options win
    nodes = 1
    ranks_per_node = 1
    time = "00:10:00"

    [sweep]                             # parameter lists
    "stimuli.odor.amplitude_uA_cm2" = [5, 10, 15]

At submit time each task's parameters go to ``tasks.json``; task *i* reads entry *i* and passes it
as ``--set key=value``. ``collect`` merges every task's ``run.json`` into ``results/summary.csv``.
"""
from __future__ import annotations

import itertools
import shutil
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cluster_sim.deploy import _validate as v
from cluster_sim.deploy import render as R
from cluster_sim.deploy.spec_check import Variant, check_all
from cluster_sim.deploy.runs import (MANIFEST, SCHEMA, SubmitOptions, Submitted, flat_row, load_spec, new_run_dir,
                                     now_utc, overall, read_run_json, safe_name, sbatch_into, status,
                                     write_atomic, write_csv, write_json)
from cluster_sim.deploy.slurm import Runner, Watcher, _run
from cluster_sim.errors import ConfigError

SWEEP_KEYS = ("job", "combine", "max_parallel", "name", "set", "resources", "sweep")
RESOURCE_KEYS = ("nodes", "ranks_per_node", "gpus_per_node", "cpus_per_task", "time", "partition", "account")


@dataclass(frozen=True)
class Sweep:
    job: Path
    params: tuple[tuple[str, tuple[str, ...]], ...]
    combine: str = "product"
    max_parallel: int = 0
    name: str = ""
    fixed: tuple[tuple[str, str], ...] = ()
    resources: tuple[tuple[str, Any], ...] = ()

    def tasks(self) -> list[list[tuple[str, str]]]:
        keys = [k for k, _ in self.params]
        lists = [vals for _, vals in self.params]
        if self.combine == "zip":
            combos = list(zip(*lists))
        else:
            combos = list(itertools.product(*lists))
        return [list(self.fixed) + list(zip(keys, c)) for c in combos]


def _flatten(prefix: str, table: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, val in table.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(val, dict):
            out += _flatten(key, val)
        else:
            out.append((key, val))
    return out


def load_sweep(path: Path) -> Sweep:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError("sweep file", str(path), f"cannot be read: {e}", "check the path") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("sweep file", str(path), f"is not valid TOML: {e}", "fix the syntax") from e
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"sweep file {path}", unknown[0], "unknown key", f"valid keys: {', '.join(SWEEP_KEYS)}")
    if "job" not in data or not isinstance(data["job"], str):
        raise ConfigError(f"sweep file {path}: job", data.get("job"), "is missing or not a string",
                          'add job = "path/to/job.toml" (relative to the sweep file)')
    job = (path.parent / data["job"]).resolve()
    combine = data.get("combine", "product")
    if combine not in ("product", "zip"):
        raise ConfigError(f"sweep file {path}: combine", combine, "must be 'product' or 'zip'", "")
    table = data.get("sweep")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"sweep file {path}: sweep", table, "needs at least one parameter list",
                          '[sweep]\n"stimuli.odor.amplitude_uA_cm2" = [5, 10, 15]')
    params: list[tuple[str, tuple[str, ...]]] = []
    for k, vals in _flatten("", table):
        v.set_key(f"sweep file {path}: sweep", k)
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"sweep file {path}: sweep.{k}", vals, "must be a non-empty list", "e.g. [5, 10, 15]")
        params.append((k, tuple(v.set_value(f"sweep.{k}", x) for x in vals)))
    if combine == "zip" and len({len(x) for _, x in params}) > 1:
        raise ConfigError(f"sweep file {path}: sweep", {k: len(x) for k, x in params},
                          "lists have different lengths, which 'zip' cannot pair", "make them equal or use 'product'")
    fixed = tuple((v.set_key("set", k), v.set_value(f"set.{k}", x)) for k, x in _flatten("", data.get("set", {})))
    res = data.get("resources", {})
    bad = sorted(set(res) - set(RESOURCE_KEYS))
    if bad:
        raise ConfigError(f"sweep file {path}: resources", bad[0], "unknown key", f"valid keys: {', '.join(RESOURCE_KEYS)}")
    mp = data.get("max_parallel", 0)
    v.positive_int(f"sweep file {path}: max_parallel", mp, minimum=0, maximum=100_000)
    name = data.get("name", "")
    if name:
        v.name(f"sweep file {path}: name", name)
    return Sweep(job, tuple(params), combine, mp, name, fixed, tuple(sorted(res.items())))


def resources_from(sweep_res: tuple[tuple[str, Any], ...], base: R.JobResources, overrides: set[str]) -> R.JobResources:
    """Sweep-file resources fill in whatever the command line did not set explicitly."""
    kw = {k: val for k, val in sweep_res if k not in overrides}
    return replace(base, **kw) if kw else base


def submit_sweep(sweep_file: Path, opts: SubmitOptions, *, dry_run: bool = False, runner: Runner = _run,
                 cli_overrides: set[str] | None = None) -> Submitted:
    sw = load_sweep(sweep_file)
    spec = load_spec(sw.job)
    tasks = sw.tasks()
    n = len(tasks)
    name = opts.name or sw.name or safe_name(Path(sweep_file).stem)
    res = resources_from(sw.resources, opts.resources, cli_overrides or set())
    k = sw.max_parallel
    res = replace(res, array=f"0-{n - 1}" + (f"%{k}" if k else ""))
    run_dir, uid = new_run_dir(opts.runs_dir, name)
    cmd = R.RunCommand(run_dir / "job.toml", opts.sets, opts.duration_ms, opts.checkpoint_every_ms, opts.mode)
    rendered = R.render("array.sbatch.j2", opts.site, res, cmd, job_name=name, run_dir=run_dir,
                        comment=f"cluster-sim-{uid}", container=opts.container_obj(must_exist=not dry_run),
                        command=opts.command())
    # a dry run refuses what a real submit would refuse
    if opts.validate and not opts.payload:
        # every task, not just task 0: one bad combination would otherwise fail hours later
        check_all(spec, [Variant(f"sweep task {i}", tuple(opts.sets) + tuple(t), opts.duration_ms, opts.mode, res.ranks)
                         for i, t in enumerate(tasks)])
    if dry_run:
        return Submitted(run_dir, rendered.text, [], True)
    run_dir.mkdir(parents=True)
    (run_dir / "logs").mkdir()
    shutil.copy2(spec, run_dir / "job.toml")
    shutil.copy2(sweep_file, run_dir / "sweep.toml")
    write_json(run_dir / "tasks.json", {"combine": sw.combine, "keys": [k for k, _ in sw.params],
                                        "tasks": [{"index": i, "set": [list(p) for p in t]} for i, t in enumerate(tasks)]})
    for i in range(n):
        (run_dir / "tasks" / str(i)).mkdir(parents=True)
    write_atomic(run_dir / "job.sbatch", rendered.text)
    man = {"schema": SCHEMA, "kind": "sweep", "name": name, "uuid": uid, "run_dir": str(run_dir),
           "created_utc": now_utc(), "site": opts.site.name, "spec_source": str(spec), "spec": "job.toml",
           "sweep": "sweep.toml", "script": "job.sbatch", "resources": asdict(res), "run_args": R.run_args(cmd, res),
           "n_tasks": n, "container": str(opts.container) if opts.container else None,
           "payload": list(opts.payload), "jobs": [], "units": []}
    write_json(run_dir / MANIFEST, man)
    job_id = sbatch_into(run_dir, run_dir / "job.sbatch", [], runner=runner)
    man["jobs"] = [{"job_id": job_id, "role": "array", "script": "job.sbatch", "tasks": n}]
    man["units"] = [{"unit": f"task-{i}", "dir": f"tasks/{i}", "job": f"{job_id}_{i}"} for i in range(n)]
    write_json(run_dir / MANIFEST, man)
    write_atomic(run_dir / "job_id", job_id + "\n")
    return Submitted(run_dir, rendered.text, [job_id], False)


def collect_sweep(run_dir: Path, man: dict[str, Any], *, watcher: Watcher | None = None) -> Path:
    import json

    tasks = json.loads((run_dir / "tasks.json").read_text(encoding="utf-8"))["tasks"]
    sts = {s.unit: s for s in status(run_dir, watcher=watcher)}
    rows = []
    for t in tasks:
        i = t["index"]
        st = sts.get(f"task-{i}")
        row: dict[str, Any] = {"task": i, "job_id": st.job_id if st else "", "state": st.state.value if st else "",
                               "exit_code": "" if not st or st.exit_code is None else st.exit_code}
        row.update({k: val for k, val in t["set"]})
        row.update(flat_row(read_run_json(run_dir / "tasks" / str(i) / "out")))
        rows.append(row)
    res = run_dir / "results"
    write_csv(res / "summary.csv", rows)
    write_json(res / "summary.json", {"state": overall(sts.values()).value, "n_tasks": len(tasks), "rows": rows})
    return res
