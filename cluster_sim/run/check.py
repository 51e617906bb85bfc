"""Every refusal of a spec for an execution mode, partition and rank count, in one place.

``cluster-sim validate``, ``run``, ``submit``, ``sweep``, ``scale`` and ``compare`` all call
:func:`check` before any compute, so a spec that validates for a mode and rank count runs there.
The spec parser checks what a spec *is*; this checks what a mode and a machine can *do* with it.
"""
from __future__ import annotations

from cluster_sim.errors import ConfigError, IncompatibleSolverError
from cluster_sim.spec.schema import JobSpec

MODES = ("bsp", "async")


def check(spec: JobSpec, ranks: int = 1) -> None:
    """Raise ``IncompatibleSolverError`` (a ``ConfigError``: exit 2) naming the key, the value and
    the fix when ``spec`` cannot run in its ``simulation.mode`` on ``ranks`` processes."""
    if ranks < 1:
        raise ConfigError("ranks", ranks, "must be at least 1", "launch with mpiexec -n N, N >= 1")
    if spec.simulation.mode == "async":
        _check_async(spec)
    else:
        _check_bsp(spec)
    _check_exchange(spec)
    _check_partition(spec, ranks)
    from cluster_sim.run.memory import check_memory

    check_memory(spec, ranks)  # per rank, with the rlimits and cgroup limits of this process


def _check_exchange(spec: JobSpec) -> None:
    """horovod is optional (built by a script) and a BSP collective; say so before any compute."""
    if spec.engine.exchange != "horovod":
        return
    if spec.simulation.mode == "async":
        raise IncompatibleSolverError("engine.exchange", "horovod",
                                      "the asynchronous mode exchanges spikes point to point and has no collective "
                                      "exchange to hand to horovod", 'use mode = "bsp" with horovod, or drop engine.exchange')
    from cluster_sim.engine.exchange import horovod_available

    if not horovod_available():
        raise ConfigError("engine.exchange", "horovod", "horovod (with its TensorFlow extension) is not installed",
                          "build it against this TensorFlow and MPI with `bash scripts/build_horovod.sh`, "
                          'or use exchange = "allgather"')


def _check_bsp(spec: JobSpec) -> None:
    """The BSP engine moves in whole steps of dt: delays, duration, interval, stimulus edges."""
    from cluster_sim.models import get_synapse_model
    from cluster_sim.spec.timing import check_bsp_grid

    dt = spec.integrator.dt_ms
    for proj in spec.projections:
        if get_synapse_model(proj.synapse).kind != "event":
            continue
        key = f"projections.{proj.name}.delay_ms"
        if proj.delay_ms < dt * 0.999999:
            raise IncompatibleSolverError(key, proj.delay_ms, f"spike-triggered synapses need a delay of at least one step ({dt:g} ms)",
                                          f"use delay_ms >= {dt:g}")
        steps = proj.delay_ms / dt
        if abs(steps - round(steps)) > 1e-6:
            raise IncompatibleSolverError(key, proj.delay_ms, f"is not a multiple of dt_ms = {dt:g} (the BSP engine moves in whole steps)",
                                          f"use delay_ms = {max(1, round(steps)) * dt:g}, or change dt_ms")
    check_bsp_grid(spec)


def _check_partition(spec: JobSpec, ranks: int) -> None:
    """Both modes keep neurons tied by in-step (graded) couplings on one rank."""
    from cluster_sim.network.partition import check_graded

    check_graded(spec, ranks)


def _check_async(spec: JobSpec) -> None:
    """Graded couplings run as coupled groups (asyncmode/groups.py); spike-triggered synapses need
    a delay (their lookahead); error control needs float64."""
    from cluster_sim.models import get_synapse_model

    for proj in spec.projections:
        if get_synapse_model(proj.synapse).kind == "event" and proj.delay_ms <= 0:
            raise IncompatibleSolverError(f"projections.{proj.name}.delay_ms", proj.delay_ms,
                                          "a zero delay gives the asynchronous mode no lookahead", "use a delay > 0")
    if spec.integrator.precision != "float64":
        raise IncompatibleSolverError("integrator.precision", spec.integrator.precision,
                                      "the asynchronous mode's error-controlled steps need float64",
                                      'use precision = "float64" (or mode = "bsp" for float32)')
