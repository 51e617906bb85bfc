"""Stimulus waveforms y(t) (dimensionless); the injected current is amplitude × y(t)."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from cluster_sim.errors import ConfigError
from cluster_sim.models.base import Waveform


def _window(ops: Any, t: Any, start: float, stop: float) -> Any:
    return ops.where((t >= start) & (t < stop), 1.0 + 0.0 * t, 0.0 * t)


def _step_shape(ops: Any, p: Mapping[str, float], t: Any) -> Any:
    return _window(ops, t, p["start_ms"], p["stop_ms"])


def _psst_shape(ops: Any, p: Mapping[str, float], t: Any) -> Any:
    # PSST: 0 before start; 1 - exp(-(t-start)/τ_rise) until stop; release·exp(-(t-stop)/τ_decay) after.
    rise = 1.0 - ops.exp(-ops.where(t >= p["start_ms"], t - p["start_ms"], 0.0 * t) * (1.0 / p["rise_tau_ms"]))
    fall = p["release_level"] * ops.exp(-ops.where(t >= p["stop_ms"], t - p["stop_ms"], 0.0 * t) * (1.0 / p["decay_tau_ms"]))
    return ops.where(t < p["start_ms"], 0.0 * t, ops.where(t < p["stop_ms"], rise, fall))


def _check_window(p: Mapping[str, float], key: Callable[[str], str]) -> None:
    start, stop = p.get("start_ms", 0.0), p.get("stop_ms", 0.0)
    if "stop_ms" in p and stop <= start:
        raise ConfigError(key("stop_ms"), stop, f"must be after start_ms = {start}", "make stop_ms > start_ms")
    for k in ("rise_tau_ms", "decay_tau_ms"):
        if k in p and p[k] <= 0:
            raise ConfigError(key(k), p[k], "must be > 0", f"use a positive {k}")


WAVEFORMS: dict[str, Waveform] = {
    "step": Waveform("step", {"start_ms": 0.0, "stop_ms": 1e30}, _step_shape, _check_window),
    "psst_odor": Waveform(
        "psst_odor",
        {"start_ms": 100.0, "stop_ms": 600.0, "rise_tau_ms": 75.0, "decay_tau_ms": 150.0, "release_level": 0.9996},
        _psst_shape, _check_window),
}
