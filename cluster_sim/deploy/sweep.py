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
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cluster_sim.deploy import _validate as v
from cluster_sim.deploy import render as R
from cluster_sim.deploy.folder import (RunFolder, SubmitOptions, Submitted, check_spec_file, overall, safe_name,
                                       write_atomic, write_json)
from cluster_sim.deploy.results import csv_text, flat_row, read_run_json
from cluster_sim.deploy.slurm import Runner, Watcher, _run
from cluster_sim.deploy.spec_check import Variant, check_all
from cluster_sim.deploy.tables import TomlTable, flatten
from cluster_sim.deploy.timelimit import short_time_warnings
from cluster_sim.errors import ConfigError

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


def load_sweep(path: Path) -> Sweep:
    t = TomlTable.read(Path(path), "sweep file")
    job = t.path("job")
    combine = t.string("combine", "product", choices=("product", "zip"))
    max_parallel = t.integer("max_parallel", 0, lo=0, hi=100_000)
    name = t.string("name", "")
    if name:
        v.name(t.key("name"), name)
    fixed = t.sets("set")
    res = t.sub("resources")
    resources = tuple(sorted((k, res.raw(k)) for k in RESOURCE_KEYS if res.has(k)))
    for k in RESOURCE_KEYS:
        res.raw(k, None)
    res.finish()
    sw = t.sub("sweep")
    t.finish()
    if not sw.data:
        raise ConfigError(t.key("sweep"), sw.data, "needs at least one parameter list",
                          '[sweep]\n"stimuli.odor.amplitude_uA_cm2" = [5, 10, 15]')
    params: list[tuple[str, tuple[str, ...]]] = []
    for k, vals in flatten(sw.data):
        v.set_key(sw.key(k), k)
        if not isinstance(vals, list) or not vals:
            raise ConfigError(sw.key(k), vals, "must be a non-empty list", f'write "{k}" = [5, 10, 15]')
        params.append((k, tuple(v.set_value(sw.key(k), x) for x in vals)))
    if combine == "zip" and len({len(x) for _, x in params}) > 1:
        raise ConfigError(t.key("sweep"), {k: len(x) for k, x in params},
                          "lists have different lengths, which 'zip' cannot pair", "make them equal or use 'product'")
    return Sweep(job, tuple(params), combine, max_parallel, name, fixed, resources)


def resources_from(sweep_res: tuple[tuple[str, Any], ...], base: R.JobResources, overrides: set[str]) -> R.JobResources:
    """Sweep-file resources fill in whatever the command line did not set explicitly."""
    kw = {k: val for k, val in sweep_res if k not in overrides}
    return replace(base, **kw) if kw else base


class SweepFolder(RunFolder):
    """A sweep's run folder: one array job, one unit per task under ``tasks/<i>/``."""

    kind = "sweep"

    def collect(self, *, watcher: Watcher | None = None) -> Path:
        """Every task's parameters, state and run.json row into ``results/summary.{csv,json}``."""
        tasks = json.loads((self.path / "tasks.json").read_text(encoding="utf-8"))["tasks"]
        sts = {s.unit: s for s in self.status(watcher=watcher)}
        rows = []
        for t in tasks:
            i = t["index"]
            st = sts.get(f"task-{i}")
            row: dict[str, Any] = {"task": i, "job_id": st.job_id if st else "", "state": st.state.value if st else "",
                                   "exit_code": "" if not st or st.exit_code is None else st.exit_code}
            row.update({k: val for k, val in t["set"]})
            row.update(flat_row(read_run_json(self.path / "tasks" / str(i) / "out")))
            rows.append(row)
        res = self.path / "results"
        write_atomic(res / "summary.csv", csv_text(rows))
        write_json(res / "summary.json", {"state": overall(sts.values()).value, "n_tasks": len(tasks), "rows": rows})
        return res


def submit_sweep(sweep_file: Path, opts: SubmitOptions, *, dry_run: bool = False, runner: Runner = _run,
                 cli_overrides: set[str] | None = None) -> Submitted:
    sw = load_sweep(sweep_file)
    spec = check_spec_file(sw.job)
    tasks = sw.tasks()
    n = len(tasks)
    name = opts.name or sw.name or safe_name(Path(sweep_file).stem)
    res = resources_from(sw.resources, opts.resources, cli_overrides or set())
    k = sw.max_parallel
    res = replace(res, array=f"0-{n - 1}" + (f"%{k}" if k else ""))
    folder = SweepFolder.new(opts.runs_dir, name)
    cmd = R.RunCommand(folder.path / "job.toml", opts.sets, opts.duration_ms, opts.checkpoint_every_ms, opts.mode)
    rendered = R.render("array.sbatch.j2", opts.site, res, cmd, job_name=name, run_dir=folder.path,
                        comment=folder.comment, container=opts.container_obj(must_exist=not dry_run),
                        command=opts.command())
    # a dry run refuses what a real submit would refuse
    if opts.validate and not opts.payload:
        # every task, not just task 0: one bad combination would otherwise fail hours later
        check_all(spec, [Variant(f"sweep task {i}", tuple(opts.sets) + tuple(t), opts.duration_ms, opts.mode, res.ranks)
                         for i, t in enumerate(tasks)])
    warnings = short_time_warnings(spec, res, opts.site, opts.checkpoint_every_ms, opts.runs_dir)
    if dry_run:
        return Submitted(folder.path, rendered.text, [], True, warnings)
    folder.create(spec, site=opts.site.name, files={"sweep.toml": Path(sweep_file)},
                  dirs=[f"tasks/{i}" for i in range(n)], sweep="sweep.toml", script="job.sbatch",
                  resources=asdict(res), run_args=R.run_args(cmd, res), n_tasks=n,
                  container=str(opts.container) if opts.container else None, payload=list(opts.payload))
    folder.write_text("tasks.json", json.dumps({"combine": sw.combine, "keys": [k for k, _ in sw.params],
                                                "tasks": [{"index": i, "set": [list(p) for p in t]}
                                                          for i, t in enumerate(tasks)]}, indent=2, sort_keys=True) + "\n")
    folder.write_text("job.sbatch", rendered.text)
    job_id = folder.submit("job.sbatch", role="array", tasks=n, runner=runner)
    return Submitted(folder.path, rendered.text, [job_id], False, warnings)
