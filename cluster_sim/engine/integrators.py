"""Fixed-step integrators over a dict of state arrays. Stateless: ``step(rhs, t, y, dt, ops)``
returns the new state. ``rhs(t, y)`` returns, per variable, (a, b) with dx/dt = a·x + b
(see ``models.base``); a and b may be Python floats, which are folded at trace time.

Multi-stage methods pass each stage's derivatives through ``ops.materialize`` where the backend
has one (the compiled kernel does when XLA's multi-output fusion is off): an identity on values
that tells the compiler to compute them once, where it would otherwise re-derive every earlier
stage inside each later fusion that reads it."""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

State = dict[str, Any]
Rhs = Callable[[Any, Mapping[str, Any]], dict[str, tuple[Any, Any]]]


def _deriv(x: Any, ab: tuple[Any, Any]) -> Any:
    a, b = ab
    return a * x + b


def euler(rhs: Rhs, t: Any, y: State, dt: float, ops: Any) -> State:
    terms = rhs(t, y)
    return {k: y[k] + dt * _deriv(y[k], terms[k]) for k in terms}


def rk4(rhs: Rhs, t: Any, y: State, dt: float, ops: Any) -> State:
    """Classic fourth-order Runge–Kutta, as in PSST's ``tf_integrator``."""
    materialize = getattr(ops, "materialize", None) or (lambda d: d)
    t1 = rhs(t, y)
    k1 = materialize({k: _deriv(y[k], t1[k]) for k in t1})
    y2 = {**y, **{k: y[k] + (0.5 * dt) * k1[k] for k in k1}}
    t2 = rhs(t + 0.5 * dt, y2)
    k2 = materialize({k: _deriv(y2[k], t2[k]) for k in t2})
    y3 = {**y, **{k: y[k] + (0.5 * dt) * k2[k] for k in k2}}
    t3 = rhs(t + 0.5 * dt, y3)
    k3 = materialize({k: _deriv(y3[k], t3[k]) for k in t3})
    y4 = {**y, **{k: y[k] + dt * k3[k] for k in k3}}
    t4 = rhs(t + dt, y4)
    k4 = materialize({k: _deriv(y4[k], t4[k]) for k in t4})
    return {k: y[k] + (dt / 6.0) * (k1[k] + 2.0 * k2[k] + 2.0 * k3[k] + k4[k]) for k in k1}


def _phi_const(z: float) -> float:
    return 1.0 if z == 0.0 else math.expm1(z) / z


def exp_euler(rhs: Rhs, t: Any, y: State, dt: float, ops: Any) -> State:
    """Exponential Euler for conditionally linear systems (Brian2's ``exponential_euler``):
    with a, b frozen over the step, x(t+dt) = x + (a x + b)·dt·φ(a dt), φ(z) = (eᶻ - 1)/z.
    Exact for linear equations (synaptic decay) and unconditionally stable for gates."""
    terms = rhs(t, y)
    out = {}
    for k, (a, b) in terms.items():
        x = y[k]
        if isinstance(a, float):
            out[k] = x + (a * x + b) * (dt * _phi_const(a * dt))
            continue
        z = a * dt
        small = ops.abs(z) < ops.small
        phi = ops.where(small, 1.0 + z * (0.5 + z * (1.0 / 6.0)), (ops.exp(z) - 1.0) / ops.where(small, 1.0, z))
        out[k] = x + (a * x + b) * (dt * phi)
    return out


METHODS: dict[str, Callable[..., State]] = {"euler": euler, "rk4": rk4, "exp_euler": exp_euler}
ORDER = {"euler": 1, "rk4": 4, "exp_euler": 1}
STAGES = {"euler": 1, "rk4": 4, "exp_euler": 1}  # right-hand-side evaluations per step
