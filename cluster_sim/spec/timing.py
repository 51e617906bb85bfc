"""Times of a spec on the integration grid: the communication interval and the check that
durations, sampling periods and stimulus edges fall on steps of dt (BSP mode).

The BSP engine advances in whole steps: a time that is not a multiple of dt used to be rounded
silently (a duration below dt even to 0 steps, reported as "completed"). Like delays, such
times are refused with the nearest valid values. The asynchronous mode has no global dt
(each neuron has its own adaptive steps), so it takes these times as given.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from cluster_sim.errors import ConfigError

if TYPE_CHECKING:
    from cluster_sim.spec.schema import JobSpec

_TOL = 1e-6  # in steps: float noise of e.g. 100 / 0.01, not a user's intent


def interval_steps(spec: "JobSpec") -> int:
    """Steps per BSP communication interval: the minimum delay of the spike-triggered
    projections, or ``engine.interval_ms`` when every coupling acts inside the step."""
    from cluster_sim.models import get_synapse_model
    from cluster_sim.models.synapses import GradedKinetic

    dt = spec.integrator.dt_ms
    delays = [round(p.delay_ms / dt) for p in spec.projections
              if not isinstance(get_synapse_model(p.synapse), GradedKinetic)]
    if delays:
        return max(1, min(delays))
    return max(1, int(round(spec.engine.interval_ms / dt)))


def communication_interval_ms(spec: "JobSpec") -> float:
    """Simulated ms between two points where a run can stop or checkpoint."""
    if spec.simulation.mode == "async":
        delays = [p.delay_ms for p in spec.projections]
        return float(min(delays)) if delays else float(spec.engine.interval_ms)
    return interval_steps(spec) * spec.integrator.dt_ms


def _nearest(value: float, dt: float, at_least_one: bool) -> str:
    lo = math.floor(value / dt + _TOL)
    hi = lo + 1
    if at_least_one:
        lo = max(lo, 1)
    options = sorted({lo, hi} - ({0} if at_least_one else set()))
    return " or ".join(f"{k * dt:.10g}" for k in options)


def check_on_grid(key: str, value: float, dt: float, *, at_least_one: bool = False) -> None:
    """Refuse ``value`` (ms) unless it is a whole number of steps of ``dt`` (>= 1 step if asked)."""
    steps = value / dt
    if abs(steps - round(steps)) > _TOL or (at_least_one and round(steps) < 1):
        what = "at least one step and a multiple" if at_least_one else "a multiple"
        name = key.rsplit(".", 1)[-1]
        raise ConfigError(key, value, f"must be {what} of integrator.dt_ms = {dt:g} (the BSP engine moves in whole steps)",
                          f"use {name} = {_nearest(value, dt, at_least_one)}, or change dt_ms")


def check_bsp_grid(spec: "JobSpec") -> None:
    """Duration, interval, sampling and stimulus edges on the dt grid (BSP only)."""
    if spec.simulation.mode != "bsp":
        return
    dt = spec.integrator.dt_ms
    check_on_grid("simulation.duration_ms", spec.simulation.duration_ms, dt, at_least_one=True)
    if "interval_ms" in spec.raw.get("engine", {}):
        check_on_grid("engine.interval_ms", spec.engine.interval_ms, dt, at_least_one=True)
    for rec in spec.recordings:  # BSP samples at steps; async from its dense output at any time
        check_on_grid(f"recordings.{rec.name}.sampling_ms", rec.sampling_ms, dt, at_least_one=True)
    for s in spec.stimuli:
        for edge in ("start_ms", "stop_ms"):
            # an edge at or after the end of the run is never reached (the step default is 1e30)
            if edge in s.params and s.params[edge] < spec.simulation.duration_ms:
                check_on_grid(f"stimuli.{s.name}.{edge}", s.params[edge], dt)
