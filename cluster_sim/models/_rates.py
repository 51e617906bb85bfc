"""Traub–Miles sodium and delayed-rectifier rate functions (ms⁻¹), shared by COBAHH and the
locust PN/LN. Written in u = v - V_T, with the exponentials shared between rates:
exp((40-u)/5) serves β_m, β_h and α_n (exp((15-u)/5) = exp((40-u)/5)·e⁻⁵), so six rates cost
four exponentials (β_m uses e5 itself, not its reciprocal, which XLA would turn into a fifth)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from cluster_sim.models.base import xoe

_E_MINUS_5 = math.exp(-5.0)


class NaKRates(NamedTuple):
    am: Any
    bm: Any
    ah: Any
    bh: Any
    an: Any
    bn: Any


def traub_rates(ops: Any, u: Any, small: float, an_coeff: float, with_na: bool = True) -> NaKRates:
    e5 = ops.exp((40.0 - u) * 0.2)  # exp((40-u)/5)
    an = (an_coeff * 5.0) * xoe(ops, (15.0 - u) * 0.2, e5 * _E_MINUS_5, small)
    bn = 0.5 * ops.exp((10.0 - u) * 0.025)
    if not with_na:
        return NaKRates(None, None, None, None, an, bn)
    am = 1.28 * xoe(ops, (13.0 - u) * 0.25, ops.exp((13.0 - u) * 0.25), small)
    # x / (e^x - 1) at x = (u-40)/5, where e^x = 1/e5, written x·e5 / (1 - e5): XLA turns the
    # reciprocal 1/e5 into a fifth exponential, exp(-(40-u)/5); this costs one divide instead.
    # (It overflows to NaN only where e5 does, below u ≈ -400 mV in float32.)
    x_m = (u - 40.0) * 0.2
    safe = ops.abs(x_m) < small
    bm = 1.4 * ops.where(safe, 1.0 - 0.5 * x_m + x_m * x_m / 12.0, x_m * e5 / ops.where(safe, 1.0, 1.0 - e5))
    ah = 0.128 * ops.exp((17.0 - u) * (1.0 / 18.0))
    bh = 4.0 / (1.0 + e5)
    return NaKRates(am, bm, ah, bh, an, bn)


def small_for(dtype_name: str) -> float:
    """Half-width of the Taylor patch around x = 0 in x/(e^x - 1)."""
    return 1e-3 if dtype_name == "float32" else 1e-6
