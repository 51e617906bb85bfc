"""``simulate``: the one entry point of a run, for both execution modes.

It owns the lifecycle once: checks, resume, device and threads, network build, output files,
checkpoint commit metadata, progress, stop signals and run.json. The execution backend (the
BSP interval loop or the asynchronous scheduler) implements only its loop, its exchange
protocol and its snapshot/restore (see ``run/context.py``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster_sim.errors import EXIT_CHECKPOINTED, EXIT_OK
from cluster_sim.run.check import check
from cluster_sim.run.context import Backend, RunContext
from cluster_sim.run.resume import resume_manifest, verify_outputs
from cluster_sim.run.summary import run_info
from cluster_sim.run.timers import Timers
from cluster_sim.runtime.progress import Progress
from cluster_sim.runtime.stop import StopRequest
from cluster_sim.spec.schema import JobSpec


@dataclass
class RunResult:
    exit_status: int  # 0 done, 75 stopped by a signal after a checkpoint
    info: dict[str, Any]  # run.json (rank 0; {} elsewhere)


def simulate(spec: JobSpec, out_dir: str | Path, *, resume: bool = False, checkpoint_every_ms: float | None = None,
             progress: bool | None = None, comm: Any = None, stop: StopRequest | None = None,
             startup_s: float = 0.0, cpu_threads: int | None = None) -> RunResult:
    """Run ``spec`` in its ``simulation.mode`` on this rank (``comm``: an mpi4py communicator, or
    None for one process) and write the results into ``out_dir``. ``startup_s``: time the caller
    already spent (imports) to count as startup; ``cpu_threads``: cores this rank may use."""
    t_wall0 = time.perf_counter()
    out = Path(out_dir)
    size = comm.Get_size() if comm is not None else 1
    rank = comm.Get_rank() if comm is not None else 0
    timers = Timers()
    timers.add("startup", startup_s)
    # Every input check happens before anything heavy is imported, identically on every rank.
    check(spec, size)
    lock = None
    if rank == 0:  # one run (or resume) at a time per output folder; the second is refused
        from cluster_sim.record.lock import OutputLock

        out.mkdir(parents=True, exist_ok=True)
        lock = OutputLock(out, purpose="resume" if resume else "run").acquire()
    try:
        return _simulate_locked(spec, out, resume=resume, checkpoint_every_ms=checkpoint_every_ms, progress=progress,
                                comm=comm, stop=stop, startup_s=startup_s, cpu_threads=cpu_threads, t_wall0=t_wall0,
                                timers=timers)
    finally:
        if lock is not None:
            lock.release()


def _simulate_locked(spec: JobSpec, out: Path, *, resume: bool, checkpoint_every_ms: float | None, progress: bool | None,
                     comm: Any, stop: StopRequest | None, startup_s: float, cpu_threads: int | None, t_wall0: float,
                     timers: Timers) -> RunResult:
    size = comm.Get_size() if comm is not None else 1
    rank = comm.Get_rank() if comm is not None else 0
    mode = spec.simulation.mode
    manifest = resume_manifest(spec, out, mode) if resume else None
    if manifest is not None:
        if rank == 0:
            verify_outputs(spec, out, manifest)
        for phase, sec in manifest.get("phases", {}).items():
            timers.add(phase, sec)
    ckpt_every = spec.output.checkpoint_every_ms if checkpoint_every_ms is None else checkpoint_every_ms
    if rank == 0 and manifest is None:
        _clear_previous_results(out)
    own_stop = stop is None  # a caller's handler (the CLI's) stays until its process ends
    stop = stop or StopRequest().install()

    t0 = time.perf_counter()
    from cluster_sim.runtime.device import prepare_environment, select_device
    from cluster_sim.runtime.mpi_env import active_context
    from cluster_sim.runtime.tflog import import_tensorflow
    from cluster_sim.runtime.threads import cpu_threads_for

    from cluster_sim.runtime.xla_cache import configure as configure_xla_cache

    mpi = active_context()
    prepare_environment(mpi.local_rank if mpi is not None and comm is not None else None)
    xla_cache = configure_xla_cache(spec.engine.xla_cache)  # before XLA first compiles
    import_tensorflow()  # its start-up lines filtered unless --verbose
    dev = select_device(spec.engine.device, cpu_threads_for(spec, size, cpu_threads))
    timers.add("startup", time.perf_counter() - t0)

    from cluster_sim.network.build import build_network
    from cluster_sim.network.partition import local_indices

    with timers.clock("build"):
        net = build_network(spec, local_indices(spec, rank, size) if size > 1 else None)

    outputs = None
    if rank == 0:
        from cluster_sim.run.outputs import RunOutputs

        with timers.clock("io"):
            outputs = RunOutputs(spec, out, mode, manifest)
    ctx = RunContext(spec=spec, out=out, mode=mode, comm=comm, rank=rank, size=size, device=dev, net=net, timers=timers,
                     stop=stop, manifest=manifest, checkpoint_every_ms=float(ckpt_every or 0.0), outputs=outputs,
                     t_wall0=t_wall0, incarnations=list(manifest.get("incarnations", [])) if manifest else [])
    try:
        backend = _backend(ctx)
        t0 = time.perf_counter()
        xla_cache.begin()
        from cluster_sim.runtime.tflog import filtered_stderr

        with filtered_stderr():  # XLA logs its cache loads as errors (see runtime/tflog.py)
            backend.prepare()  # traces and compiles every kernel: startup, not integration
        xla_cache.publish()
        timers.add("startup", time.perf_counter() - t0)
        start_ms = float(manifest["simulated_ms"]) if manifest else 0.0
        ctx.progress = Progress(spec.simulation.duration_ms, enabled=progress if rank == 0 else False, start_ms=start_ms)
        try:
            status = backend.run()
            ctx.update_progress(backend.simulated_ms(), force=True)
        except MemoryError as e:
            raise _out_of_memory(spec, size) from e
        except Exception as e:
            if type(e).__name__ == "ResourceExhaustedError":  # TensorFlow's OOM (host or GPU)
                raise _out_of_memory(spec, size) from e
            raise
        finally:
            ctx.progress.close()
        if outputs is not None:
            outputs.flush()
        xla_cache.publish(after_startup=True)  # kernels compiled during the run (a shape seen late), if any
    finally:
        if own_stop:
            stop.restore()
        if outputs is not None:
            outputs.close()

    mine = backend.rank_stats()
    mine.update({"rank": rank, **{k: round(v, 6) for k, v in timers.seconds.items()}})
    mine["xla_cache"] = xla_cache.summary()
    per_rank = ctx.comm.gather(mine, root=0) if ctx.comm is not None else [mine]
    backend.close()
    info: dict[str, Any] = {}
    if rank == 0:
        from cluster_sim.record.checkpoint import atomic_write_json

        info = run_info(ctx, status, backend.simulated_ms(), per_rank, backend.summary(per_rank), startup_s)
        info["xla_cache"] = _xla_cache_info([r.pop("xla_cache") for r in per_rank])
        atomic_write_json(out / "run.json", info)
    return RunResult(EXIT_CHECKPOINTED if status == "checkpointed" else EXIT_OK, info)



def _xla_cache_info(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """One run.json entry for all ranks: ``hit`` only if no rank had to compile anew."""
    first = ranks[0]
    return {**first, "entries_written": int(sum(r["entries_written"] for r in ranks)),
            "entries_written_in_run": int(sum(r["entries_written_in_run"] for r in ranks)),
            "hit": all(r["hit"] for r in ranks), "errors": sorted({e for r in ranks for e in r["errors"]})}


def _clear_previous_results(out: Path) -> None:
    """A fresh run (or --overwrite) must not leave an older run's checkpoint or run.json beside
    its new files: a later --resume would continue the wrong run. The lock file stays."""
    import shutil

    from cluster_sim.record.checkpoint import checkpoint_dir

    shutil.rmtree(checkpoint_dir(out), ignore_errors=True)
    (out / "run.json").unlink(missing_ok=True)


def _out_of_memory(spec: JobSpec, size: int) -> Exception:
    from cluster_sim.errors import RunError
    from cluster_sim.run.memory import oom_message

    return RunError(oom_message(spec, size))


def _backend(ctx: RunContext) -> Backend:
    if ctx.mode == "async":
        from cluster_sim.asyncmode.backend import AsyncBackend

        return AsyncBackend(ctx)
    from cluster_sim.engine.bsp import BSPBackend

    return BSPBackend(ctx)
