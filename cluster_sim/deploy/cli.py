"""``cluster-sim submit|status|collect|cancel|sweep|scale|container`` subcommands.

The core CLI calls :func:`register`; ``python -m cluster_sim.deploy.cli`` runs these
subcommands alone (used by the study's collect job and before the core CLI exists).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Callable

from cluster_sim.deploy import render as R
from cluster_sim.deploy.folder import SubmitOptions, Submitted, default_runs_dir, format_status, overall
from cluster_sim.deploy.runs import open_run, submit_run
from cluster_sim.deploy.sites import load_site
from cluster_sim.deploy import _validate as v
from cluster_sim.errors import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, ConfigError, JobFailedError,
                                SubmissionError)

RES_OPTS = ("nodes", "ranks_per_node", "gpus_per_node", "cpus_per_task", "time", "partition", "account")


def _add_job_options(p: argparse.ArgumentParser, *, resources: bool = True) -> None:
    p.add_argument("--site", default="local", help="site profile name (default: local); see docs for adding one")
    if resources:
        g = p.add_argument_group("resources")
        g.add_argument("--nodes", type=int, default=None, help="nodes (default 1)")
        g.add_argument("--ranks-per-node", type=int, default=None, help="MPI ranks per node (= GPUs per node)")
        g.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per node (0 = CPU job)")
        g.add_argument("--cpus-per-task", type=int, default=None, help="cores per rank (default: cores_per_node / ranks)")
        g.add_argument("--time", default=None, help="time limit, HH:MM:SS or D-HH:MM:SS (default 01:00:00)")
        g.add_argument("--partition", default=None, help="partition (default: the site's CPU/GPU partition)")
        g.add_argument("--account", default=None, help="account to charge")
        g.add_argument("--dependency", default="", help="SLURM dependency, e.g. afterok:123")
        ex = g.add_mutually_exclusive_group()
        ex.add_argument("--exclusive", dest="exclusive", action="store_true", default=None, help="whole nodes")
        ex.add_argument("--no-exclusive", dest="exclusive", action="store_false")
    x = p.add_argument_group("scheduler pass-through (allow-listed; override the site profile)")
    x.add_argument("--mem", default=None, help="memory per node, e.g. 64G")
    x.add_argument("--qos", default=None, help="quality of service")
    x.add_argument("--constraint", default=None, help="node features, e.g. 'a100&ib'")
    x.add_argument("--mail-type", default=None, help="e.g. END,FAIL")
    x.add_argument("--mail-user", default=None, help="address for --mail-type")
    r = p.add_argument_group("requeue")
    r.add_argument("--no-requeue", action="store_true", help="no --requeue/--signal (no checkpoint restart)")
    r.add_argument("--signal-seconds", type=int, default=None,
                   help="send USR1 to the batch shell this many seconds before the time limit (site default)")
    r.add_argument("--max-requeues", type=int, default=None, help="cap on self-requeues (site default, 3)")
    c = p.add_argument_group("run")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec value (repeatable)")
    c.add_argument("--duration", type=float, default=None, metavar="MS", help="simulated time in ms")
    c.add_argument("--checkpoint-every", type=float, default=None, metavar="MS", help="checkpoint interval in ms")
    if resources:
        c.add_argument("--mode", default="", choices=["", *R.MODES], help="exchange mode")
    c.add_argument("--container", type=Path, default=None, help="Apptainer/Singularity image (.sif) to run in")
    c.add_argument("--name", default="", help="run name (default: the file's stem)")
    c.add_argument("--runs-dir", type=Path, default=None, help="where run folders go (default: $CLUSTER_SIM_RUNS, else <site scratch>/cluster-sim/runs, else ./runs)")
    c.add_argument("--dry-run", action="store_true", help="print the batch script; create and submit nothing")
    c.add_argument("--no-validate", dest="validate", action="store_false", help="skip `cluster-sim validate`")
    # Internal/test hook: run this command instead of cluster-sim (a shell payload in the engine's place).
    c.add_argument("--payload", default="", help=argparse.SUPPRESS)


def _options(ns: argparse.Namespace, *, resources: bool = True) -> tuple[SubmitOptions, set[str]]:
    site = load_site(ns.site)
    given = {k for k in RES_OPTS if resources and getattr(ns, k, None) is not None}
    kw = {k: getattr(ns, k) for k in given}
    if resources and ns.dependency:
        kw["dependency"] = ns.dependency
    if resources and ns.exclusive is not None:
        kw["exclusive"] = ns.exclusive
    if kw.get("gpus_per_node") and "ranks_per_node" not in kw:
        kw["ranks_per_node"] = kw["gpus_per_node"]
    kw.update({k: getattr(ns, k) for k in R.PASS_THROUGH if getattr(ns, k, None)})
    res = R.JobResources(**kw, requeue=not ns.no_requeue, signal_seconds=ns.signal_seconds,
                         max_requeues=ns.max_requeues)
    sets = tuple(v.parse_set(s) for s in ns.set)
    payload = tuple(shlex.split(ns.payload)) if ns.payload else ()
    opts = SubmitOptions(site=site, resources=res, sets=sets, duration_ms=ns.duration,
                         checkpoint_every_ms=ns.checkpoint_every, mode=getattr(ns, "mode", ""), name=ns.name,
                         runs_dir=ns.runs_dir or default_runs_dir(site), container=ns.container, payload=payload,
                         validate=ns.validate)
    return opts, given


def _report(sub: Submitted, what: str) -> int:
    for w in sub.warnings:
        print(f"cluster-sim: warning: {w}", file=sys.stderr)
    if sub.dry_run:
        sys.stdout.write(sub.script)
        print(f"# dry run: nothing submitted; the run folder would be {sub.run_dir}", file=sys.stderr)
    else:
        print(f"submitted {what} {','.join(sub.job_ids)}: {sub.run_dir}")
    return EXIT_OK


def cmd_submit(ns: argparse.Namespace) -> int:
    opts, _ = _options(ns)
    return _report(submit_run(ns.spec, opts, dry_run=ns.dry_run), "job")


def cmd_sweep(ns: argparse.Namespace) -> int:
    from cluster_sim.deploy.sweep import submit_sweep

    opts, given = _options(ns)
    return _report(submit_sweep(ns.sweep, opts, dry_run=ns.dry_run, cli_overrides=given), "array job")


def cmd_scale(ns: argparse.Namespace) -> int:
    if ns.collect:
        return cmd_collect(argparse.Namespace(run=ns.collect))
    if ns.study is None:
        raise ConfigError("scale", None, "needs a study file or --collect RUN", "cluster-sim scale studies/strong.toml")
    from cluster_sim.deploy.study import submit_study

    opts, _ = _options(ns, resources=False)
    return _report(submit_study(ns.study, opts, dry_run=ns.dry_run), "study jobs")


def _run_dir(p: Path) -> Path:
    return v.path("run folder", p, must_exist=True)


def cmd_status(ns: argparse.Namespace) -> int:
    folder = open_run(_run_dir(ns.run))
    rd = folder.path
    sts = folder.wait(timeout_s=ns.timeout) if ns.wait else folder.status(tail_lines=ns.tail)
    if ns.json:
        print(json.dumps({"run_dir": str(rd), "state": overall(sts).value,
                          "units": [{"unit": s.unit, "job_id": s.job_id, "state": s.state.value,
                                     "exit_code": s.exit_code, "reason": s.reason, "restarts": s.restarts, "source": s.source,
                                     "log": str(s.log) if s.log else None, "log_tail": s.log_tail} for s in sts]},
                         indent=2))
    else:
        sys.stdout.write(format_status(rd, sts))
    return EXIT_FAILED if overall(sts).is_failure else EXIT_OK


def cmd_collect(ns: argparse.Namespace) -> int:
    res = open_run(_run_dir(ns.run)).collect()
    print(f"results: {res}")
    for p in sorted(res.iterdir()):
        print(f"  {p.name}")
    return EXIT_OK


def cmd_cancel(ns: argparse.Namespace) -> int:
    folder = open_run(_run_dir(ns.run))
    rd = folder.path
    ids = folder.cancel()
    print(f"cancelled {' '.join(ids) or '(no jobs)'}")
    if folder.kind == "run":
        print(f"continue it later from its checkpoint with: cluster-sim resubmit {rd} [--time HH:MM:SS]")
    return EXIT_OK


def cmd_resubmit(ns: argparse.Namespace) -> int:
    from cluster_sim.deploy.resubmit import resubmit

    rd = _run_dir(ns.run)
    jid = resubmit(rd, time=ns.time)
    print(f"resubmitted {rd} as job {jid} (resumes from its checkpoint, if any); follow it with: cluster-sim status {rd}")
    return EXIT_OK


def cmd_logs(ns: argparse.Namespace) -> int:
    from cluster_sim.deploy import browse

    rd = _run_dir(ns.run)
    picked = browse.pick_units(rd, ns.task)
    if ns.follow:
        if len(picked) != 1:
            raise ConfigError("--follow", True, f"follows one unit; {rd} has {len(picked)}", "add --task N")
        u = picked[0]
        w = browse.Watcher()
        browse.follow(lambda: browse.log_of(rd, u), sys.stdout,
                      done=lambda: w.query([u["job"]])[u["job"]].state.is_terminal)
        return EXIT_OK
    for u in picked:
        log = browse.log_of(rd, u)
        if len(picked) > 1:
            print(f"===== {u['unit']} (job {u['job']}): {log or 'no log yet'} =====")
        if log is not None:
            sys.stdout.write(log.read_text(encoding="utf-8", errors="replace"))
        elif len(picked) == 1:
            print(f"no log yet for {u['unit']} (job {u['job']}): it has not started", file=sys.stderr)
    return EXIT_OK


def cmd_runs(ns: argparse.Namespace) -> int:
    from cluster_sim.deploy import browse

    runs_dir = ns.runs_dir or default_runs_dir(load_site(ns.site))
    sys.stdout.write(browse.format_runs(browse.list_runs(runs_dir)))
    return EXIT_OK


def cmd_container_check(ns: argparse.Namespace) -> int:
    from cluster_sim.deploy.container import check_file

    from cluster_sim.errors import ConfigError

    args: dict[str, str] = {}
    for a in ns.build_arg or []:
        name, eq, val = a.partition("=")
        if not eq or not name:
            raise ConfigError("--build-arg", a, "is not NAME=VALUE", "e.g. --build-arg OMPI_VERSION=4.1.6")
        args[name] = val
    bad = 0
    for f in ns.files:
        r = check_file(f, args)
        print(r.report())
        bad += not r.ok
    return EXIT_BAD_INPUT if bad else EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the deployment subcommands to the core CLI's subparsers."""

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("submit", cmd_submit, "submit one run as a SLURM batch job")
    p.add_argument("spec", type=Path, help="job spec (TOML)")
    _add_job_options(p)

    p = add("status", cmd_status, "state of a run folder's jobs (log tail on failure); exit 1 on failure")
    p.add_argument("run", type=Path, help="run folder (runs/<name>-<id>)")
    p.add_argument("--wait", action="store_true", help="block until every job has ended")
    p.add_argument("--timeout", type=float, default=3600.0, help="with --wait: give up after this many seconds")
    p.add_argument("--tail", type=int, default=20, help="log lines shown for failed jobs")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("resubmit", cmd_resubmit, "continue a cancelled/timed-out run folder from its checkpoint")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--time", default=None, help="new time limit (any sbatch form); default: the folder's")

    p = add("logs", cmd_logs, "print a run folder's job logs (--follow: as they grow)")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--task", default=None, help="one unit: array index, position or unit name")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")

    p = add("runs", cmd_runs, "list run folders with their state")
    p.add_argument("--runs-dir", type=Path, default=None, help="default: $CLUSTER_SIM_RUNS, the site's scratch, ./runs")
    p.add_argument("--site", default="local", help="site profile (for its scratch)")

    p = add("collect", cmd_collect, "gather results and timers into RUN/results (CSV, JSON, plots)")
    p.add_argument("run", type=Path, help="run folder")

    p = add("cancel", cmd_cancel, "scancel every job of a run folder")
    p.add_argument("run", type=Path, help="run folder")

    p = add("sweep", cmd_sweep, "submit a parameter sweep as one job array")
    p.add_argument("sweep", type=Path, help="sweep file (TOML)")
    _add_job_options(p)

    p = add("scale", cmd_scale, "submit a strong/weak scaling study, or --collect one")
    p.add_argument("study", type=Path, nargs="?", help="study file (TOML)")
    p.add_argument("--collect", type=Path, default=None, metavar="RUN", help="collect a submitted study instead")
    _add_job_options(p, resources=False)

    p = add("container", lambda ns: (ns.container_parser.print_help(), EXIT_BAD_INPUT)[1],
            "container definition tools")
    p.set_defaults(container_parser=p)
    sub = p.add_subparsers(dest="container_cmd", metavar="{check}")
    c = sub.add_parser("check", help="validate Apptainer definition files offline",
                       description="validate Apptainer definition files offline")
    c.add_argument("files", type=Path, nargs="+", help="definition files (.def)")
    c.add_argument("--build-arg", action="append", metavar="NAME=VALUE",
                   help="as for apptainer build: defines {{ NAME }} (repeatable)")
    c.set_defaults(func=cmd_container_check)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster-sim", description="cluster-sim deployment commands")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    ns = parser.parse_args(argv)
    try:
        return int(ns.func(ns))
    except ConfigError as e:
        print(f"cluster-sim: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (SubmissionError, JobFailedError) as e:
        print(f"cluster-sim: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
