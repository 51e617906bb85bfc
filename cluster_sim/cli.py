"""The ``cluster-sim`` command line. Exit status: 0 success, 2 bad input (nothing computed),
75 stopped by SIGTERM/SIGUSR1 after writing a checkpoint (requeue and ``--resume``),
1 a run that failed."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from cluster_sim.errors import EXIT_BAD_INPUT, EXIT_FAILED, ConfigError, JobFailedError, RunError, SubmissionError

_T_IMPORT0 = time.perf_counter()


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="job spec (TOML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any spec key, e.g. --set integrator.dt_ms=0.02 (repeatable)")
    p.add_argument("--duration", type=float, metavar="MS", help="simulated time in ms (= --set simulation.duration_ms=MS)")


def _load(args: argparse.Namespace) -> Any:
    from cluster_sim.spec import load_spec

    overrides = list(args.overrides)
    if getattr(args, "duration", None) is not None:
        overrides.append(f"simulation.duration_ms={args.duration!r}")
    if getattr(args, "mode", None):
        overrides.append(f'simulation.mode="{args.mode}"')
    if getattr(args, "device", None):
        overrides.append(f'engine.device="{args.device}"')
    return load_spec(args.job, overrides)


def cmd_validate(args: argparse.Namespace) -> int:
    from cluster_sim.run.check import check

    spec = _load(args)
    check(spec, args.ranks)  # the same refusals as `run` for this mode and rank count
    print(f"{args.job}: valid for {spec.simulation.mode} on {args.ranks} rank{'s' if args.ranks > 1 else ''} — "
          f"{spec.n_neurons} neurons in {len(spec.populations)} populations, "
          f"{len(spec.projections)} projections, {spec.simulation.duration_ms:g} ms {_solver(spec)}")
    return 0


def _solver(spec: Any) -> str:
    it = spec.integrator
    if spec.simulation.mode == "async":
        return f"with variable-step BDF at rtol {it.rtol:g}, atol {it.atol:g} ({it.precision})"
    return f"at dt {it.dt_ms:g} ms ({it.method}, {it.precision})"


def cmd_run(args: argparse.Namespace) -> int:
    from cluster_sim.cli_checks import check_out_dir, checkpoint_every_ms
    from cluster_sim.runtime.tflog import quiet_tensorflow

    quiet_tensorflow(args.verbose)
    spec = _load(args)  # every input check happens here and in simulate's check, before any compute
    from cluster_sim.run.check import check
    from cluster_sim.runtime.mpi_env import mpi_world_size

    check(spec, mpi_world_size())  # before the output folder is touched (simulate checks again, cheaply)
    out = Path(args.out or spec.output.dir)
    check_out_dir(out, "--out" if args.out else "output.dir", resume=args.resume)
    checkpoint_every = checkpoint_every_ms(args.checkpoint_every, spec)
    if not args.resume and (out / "spikes.h5").exists() and not args.overwrite:
        raise ConfigError("--out", str(out), "already holds results",
                          "pass --resume to continue it, --overwrite to replace it, or choose another --out")
    from cluster_sim.run import simulate
    from cluster_sim.runtime.mpi_env import mpi_context
    from cluster_sim.runtime.stop import StopRequest

    stop = StopRequest().install()  # before the slow imports: a SIGUSR1 then is not lost; kept until exit
    ctx = mpi_context()  # None unless launched by mpiexec/srun with more than one rank
    startup = time.perf_counter() - _T_IMPORT0  # the rest (TensorFlow import, compile) simulate counts
    result = simulate(spec, out, resume=args.resume, checkpoint_every_ms=checkpoint_every,
                      progress=None if not args.quiet else False, startup_s=startup,
                      comm=ctx.comm if ctx else None, cpu_threads=ctx.cpu_threads if ctx else None, stop=stop)
    root = ctx is None or ctx.rank == 0
    if root and not args.quiet:
        print(format_summary(result.info, out))
    if root and result.exit_status != 0:
        print(f"stopped by signal: checkpoint written to {out}; continue with: cluster-sim run {args.job} --out {out} --resume",
              file=sys.stderr)
    return result.exit_status


def format_summary(info: dict[str, Any], out: Path) -> str:
    phases = info.get("phases", {})
    rates = ", ".join(f"{k} {v:.2f} Hz" for k, v in info.get("rates_hz", {}).items())
    lines = [
        f"{info['name']}: {info['status']} — {info['simulated_ms']:g} ms simulated in {info['wall_seconds']:.2f} s "
        f"(real-time factor {info['real_time_factor']:.2f})",
        f"  neurons {info['n_neurons']}, synapses {info['n_synapses']}, spikes {info['n_spikes']} ({rates})",
        "  phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items() if v > 0),
        f"  results: {out}/spikes.h5, {out}/run.json",
    ]
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from cluster_sim.analysis import summarize
    from cluster_sim.record.repair import ensure_readable

    run_dir = Path(args.run_dir)
    if not (run_dir / "spikes.h5").exists():
        raise ConfigError("RUN_DIR", str(run_dir), "has no spikes.h5", "give the --out folder of a cluster-sim run")
    ensure_readable(run_dir)
    summary = summarize(run_dir)
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    info = summary.get("run", {})
    print(f"run: {run_dir}  status: {info.get('status', 'unknown (no run.json: killed?)')}")
    if info:
        print(f"  {info['n_neurons']} neurons, {info['n_synapses']} synapses, {info['simulated_ms']:g} ms simulated, "
              f"{info['wall_seconds']:.2f} s wall, ranks {info['ranks']}, mode {info['mode']}")
    for pop, s in summary["populations"].items():
        print(f"  {pop:>12}: {s['n_spikes']:8d} spikes, {s['rate_hz']:8.2f} Hz, active {s['active_fraction']:.2f}, "
              f"ISI CV {s['isi_cv']:.2f}")
    if info.get("phases"):
        total = sum(info["phases"].values()) or 1.0
        print("  timers: " + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in info["phases"].items()))
    for rank in info.get("per_rank", []):
        print(f"  rank {rank['rank']}: " + ", ".join(f"{k} {v:.2f}" for k, v in rank.items() if k != "rank"))
    if "load_balance" in info:
        print(f"  load balance: {info['load_balance']:.3f}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from cluster_sim.analysis.plot import plot_run
    from cluster_sim.record.repair import ensure_readable

    run_dir = Path(args.run_dir)
    if not (run_dir / "spikes.h5").exists():
        raise ConfigError("RUN_DIR", str(run_dir), "has no spikes.h5", "give the --out folder of a cluster-sim run")
    ensure_readable(run_dir)
    path = plot_run(run_dir, Path(args.output) if args.output else None)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cluster-sim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a job spec", description="Run a job spec and write spikes.h5, reports and run.json.")
    _add_spec_args(p)
    p.add_argument("--out", help="output folder (default: output.dir of the spec)")
    p.add_argument("--checkpoint-every", type=float, metavar="MS", help="write a checkpoint every MS simulated ms")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace existing results in --out")
    p.add_argument("--mode", choices=["bsp", "async"], help="execution model (default: the spec's)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], help="TensorFlow device (default: the spec's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("-v", "--verbose", action="store_true", help="keep TensorFlow's start-up log lines")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a job spec without running it")
    _add_spec_args(p)
    p.add_argument("--mode", choices=["bsp", "async"], help="execution model to check for (default: the spec's)")
    p.add_argument("--ranks", type=int, default=1, metavar="N", help="number of MPI ranks to check the partition for")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("info", help="rates, spike counts and timers of a finished run")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("plot", help="raster, population rate and traces as a PNG")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", help="PNG path (default: RUN_DIR/overview.png)")
    p.set_defaults(func=cmd_plot)

    from cluster_sim.analysis.compare_cli import register as register_compare

    register_compare(sub)
    from cluster_sim.record.repair_cli import register as register_repair

    register_repair(sub)
    try:
        from cluster_sim.deploy.cli import register
    except ImportError:  # a trimmed install without the deploy package
        pass
    else:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    status: int
    try:
        status = int(args.func(args) or 0)
    except ConfigError as e:
        _report(f"cluster-sim: error: {e}")
        status = EXIT_BAD_INPUT
    except SubmissionError as e:  # sbatch/scancel refused: no run was started, so not "run failed"
        _report(f"cluster-sim: submission failed: {e}")
        status = EXIT_FAILED
    except (RunError, JobFailedError) as e:
        _report(f"cluster-sim: run failed: {e}")
        status = EXIT_FAILED
    except KeyboardInterrupt:
        _report("cluster-sim: interrupted")
        status = 130
    except Exception as e:  # noqa: BLE001 - under MPI an unhandled error must stop every rank
        if not _in_mpi():
            raise
        import traceback

        _report(f"cluster-sim: unexpected error: {e!r}\n{traceback.format_exc()}")
        status = EXIT_FAILED
    if status not in (0, 75) and _in_mpi():
        # Peers may be blocked in a collective: MPI_Abort ends every rank now (no hang).
        from cluster_sim.runtime.mpi_env import abort_all

        abort_all(status)
    return status


def _in_mpi() -> bool:
    from cluster_sim.runtime.mpi_env import active_context

    return active_context() is not None


def _report(msg: str) -> None:
    from cluster_sim.runtime.mpi_env import active_context

    ctx = active_context()
    prefix = f"[rank {ctx.rank}/{ctx.size}] " if ctx is not None else ""
    # One write per message: print's separate write of the newline let two ranks' messages run
    # together on one line (a pipe keeps a write below PIPE_BUF whole).
    sys.stderr.write(prefix + msg + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
