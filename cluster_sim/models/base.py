"""What a model module provides. Models are written against an ``ops`` namespace (``exp``,
``where``, ``abs``) so the same equations run on TensorFlow tensors inside the compiled step and
on NumPy arrays (tests, the async integrator). Models know nothing of MPI, files or the engine.

Every model is *conditionally linear*: each variable obeys dx/dt = a(y)·x + b(y), where a, b may
depend on the other variables. That one form serves forward Euler and RK4 (dx/dt = a x + b) and
exponential Euler (x ← x + (a x + b)·dt·φ(a dt)), as in Brian2's ``exponential_euler``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

from cluster_sim.errors import ConfigError

Array = Any  # a tf.Tensor or np.ndarray
Terms = dict[str, tuple[Any, Any]]  # variable -> (a, b); a or b may be a Python float


class Drive(NamedTuple):
    """Inputs to a neuron's membrane equation from outside the neuron, per neuron."""

    i_ext: Any  # injected current, in the model's current unit (0.0 when none)
    g_syn: Any  # summed synaptic conductance, in the model's conductance unit (0.0 when none)
    gE_syn: Any  # summed conductance × reversal potential (mV × conductance unit)


@dataclass(frozen=True)
class Bound:
    """The physical range of one parameter: lo <= value (lo < value if ``lo_open``) <= hi."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    meaning: str = ""

    def problem(self, value: float) -> str | None:
        if not math.isfinite(value):
            return "must be finite"
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return f"must be {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None and value > self.hi:
            return f"must be <= {self.hi:g}"
        return None


def positive(meaning: str) -> Bound:
    return Bound(0.0, lo_open=True, meaning=meaning)


def non_negative(meaning: str) -> Bound:
    return Bound(0.0, meaning=meaning)


def any_value(meaning: str) -> Bound:
    return Bound(meaning=meaning)


FRACTION = Bound(0.0, 1.0, meaning="a fraction")


def check_ranges(owner: str, ranges: Mapping[str, Bound], defaults: Mapping[str, float], p: Mapping[str, float],
                 key: Callable[[str], str]) -> None:
    """ConfigError naming the first parameter outside its declared range (e.g. C_pF = 0 would
    divide by zero in every step; a negative time constant makes a decay grow)."""
    for name, value in p.items():
        bound = ranges.get(name)
        if bound is None:
            raise RuntimeError(f"{owner} declares no range for its parameter {name!r}")  # a model bug, not input
        problem = bound.problem(float(value))
        if problem:
            what = f" ({bound.meaning})" if bound.meaning else ""
            raise ConfigError(key(name), value, f"{problem}{what}",
                              f"use a physical value, e.g. the default {name} = {defaults.get(name, 'see docs')!r}")


class NeuronModel:
    """Base class. Subclasses set the class attributes and implement ``initial_state`` and ``terms``."""

    name: str = ""
    variables: tuple[str, ...] = ()  # integrated state; "v" (membrane potential, mV) first
    defaults: Mapping[str, float] = {}  # parameter defaults; units in the names
    conductance_unit: str = "mS_cm2"  # unit of synaptic conductance onto this model
    current_unit: str = "uA_cm2"  # unit of injected current
    capacitance_key: str = "C_uF_cm2"
    event_vars: tuple[str, ...] = ()  # variables spike-triggered synapses may increment
    is_source: bool = False  # a spike source (e.g. Poisson): no state, no input, spikes from a formula
    description: str = ""
    param_ranges: Mapping[str, Bound] = {}  # one Bound per parameter in ``defaults`` (checked by the spec)

    def params(self, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
        p = dict(self.defaults)
        p.update(overrides or {})
        return p

    def check_params(self, p: Mapping[str, float], key: Callable[[str], str]) -> None:
        """Called by spec validation with the full parameters; ``key(name)`` gives the dotted key."""
        check_ranges(f"neuron model {self.name!r}", self.param_ranges, self.defaults, p, key)

    def initial_state(self, p: Mapping[str, float], n: int, normal: Callable[[str], Any]) -> dict[str, Any]:
        """Initial values, one array of length ``n`` per variable. ``normal(tag)`` returns standard
        normal draws for these neurons, the same for a neuron however the network is split."""
        raise NotImplementedError

    def terms(self, ops: Any, p: Mapping[str, float], y: Mapping[str, Array], drive: Drive) -> Terms:
        raise NotImplementedError

    def threshold_mV(self, p: Mapping[str, float]) -> float:
        return p["threshold_mV"]

    def refractory_ms(self, p: Mapping[str, float]) -> float:
        return p["refractory_ms"]


def membrane(p_C: float, g_leak_terms: list[tuple[Any, float]], drive: Drive) -> tuple[Any, Any]:
    """(a, b) of C dv/dt = -Σ g_k (v - E_k) + I_ext - g_syn (v) + gE_syn for the given channel list."""
    g_tot = drive.g_syn
    gE_tot = drive.gE_syn
    for g, E in g_leak_terms:
        g_tot = g_tot + g
        gE_tot = gE_tot + g * E
    return (-g_tot / p_C, (gE_tot + drive.i_ext) / p_C)


def xoe(ops: Any, x: Array, ex: Array, small: float) -> Array:
    """x / (e^x - 1) given ex = e^x, with the removable singularity at x = 0 handled
    (float32 hits 0/0 there otherwise; see peers_measured.md)."""
    safe = ops.abs(x) < small
    return ops.where(safe, 1.0 - 0.5 * x + x * x / 12.0, x / ops.where(safe, 1.0, ex - 1.0))


@dataclass(frozen=True)
class Waveform:
    """A stimulus time course y(t) (dimensionless) multiplied by the amplitude."""

    name: str
    defaults: Mapping[str, float]
    shape: Callable[[Any, Mapping[str, float], Any], Any]  # (ops, params, t) -> y(t)
    check: Callable[[Mapping[str, float], Callable[[str], str]], None]
