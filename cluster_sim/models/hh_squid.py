"""Hodgkin & Huxley (1952) squid giant axon, modern sign convention (rest ≈ -65 mV), 6.3 °C.
Per-area units: mS/cm², µF/cm², µA/cm². Used to validate integrators against references."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from cluster_sim.models.base import Drive, NeuronModel, Terms, any_value, membrane, non_negative, positive, xoe


def _rates(ops: Any, v: Any, small: float) -> tuple[Any, ...]:
    am = 1.0 * xoe(ops, -(v + 40.0) * 0.1, ops.exp(-(v + 40.0) * 0.1), small)  # 0.1(V+40)/(1-exp(-(V+40)/10))
    bm = 4.0 * ops.exp(-(v + 65.0) * (1.0 / 18.0))
    ah = 0.07 * ops.exp(-(v + 65.0) * 0.05)
    bh = 1.0 / (1.0 + ops.exp(-(v + 35.0) * 0.1))
    an = 0.1 * xoe(ops, -(v + 55.0) * 0.1, ops.exp(-(v + 55.0) * 0.1), small)  # 0.01(V+55)/(1-exp(-(V+55)/10))
    bn = 0.125 * ops.exp(-(v + 65.0) * 0.0125)
    return am, bm, ah, bh, an, bn


class HHSquid(NeuronModel):
    name = "hh_squid"
    variables = ("v", "m", "h", "n", "ge", "gi")
    event_vars = ("ge", "gi")
    description = "Hodgkin-Huxley 1952 squid axon (+ exponential synaptic conductances ge, gi)"
    defaults = {
        "C_uF_cm2": 1.0,
        "g_Na_mS_cm2": 120.0, "E_Na_mV": 50.0,
        "g_K_mS_cm2": 36.0, "E_K_mV": -77.0,
        "g_L_mS_cm2": 0.3, "E_L_mV": -54.387,
        "E_e_mV": 0.0, "E_i_mV": -80.0, "tau_e_ms": 5.0, "tau_i_ms": 10.0,
        "threshold_mV": 0.0, "refractory_ms": 2.0,
        "init_v_mV": -65.0,
    }
    param_ranges = {
        "C_uF_cm2": positive("membrane capacitance"),
        "g_Na_mS_cm2": non_negative("a conductance"), "E_Na_mV": any_value("a reversal potential"),
        "g_K_mS_cm2": non_negative("a conductance"), "E_K_mV": any_value("a reversal potential"),
        "g_L_mS_cm2": non_negative("a conductance"), "E_L_mV": any_value("a reversal potential"),
        "E_e_mV": any_value("a reversal potential"), "E_i_mV": any_value("a reversal potential"),
        "tau_e_ms": positive("a time constant"), "tau_i_ms": positive("a time constant"),
        "threshold_mV": any_value("spike threshold"), "refractory_ms": non_negative("refractory period"),
        "init_v_mV": any_value("initial membrane potential"),
    }

    def initial_state(self, p: Mapping[str, float], n: int, normal: Callable[[str], Any]) -> dict[str, Any]:
        from cluster_sim.models._ops import numpy_ops

        v0 = p["init_v_mV"]
        am, bm, ah, bh, an, bn = _rates(numpy_ops(), np.float64(v0), 1e-6)
        ones = np.ones(n)
        return {"v": v0 * ones, "m": am / (am + bm) * ones, "h": ah / (ah + bh) * ones,
                "n": an / (an + bn) * ones, "ge": 0.0 * ones, "gi": 0.0 * ones}

    def terms(self, ops: Any, p: Mapping[str, float], y: Mapping[str, Any], drive: Drive) -> Terms:
        v, m, h, n, ge, gi = (y[k] for k in self.variables)
        am, bm, ah, bh, an, bn = _rates(ops, v, ops.small)
        n2 = n * n
        channels = [
            (p["g_Na_mS_cm2"] * m * m * m * h, p["E_Na_mV"]),
            (p["g_K_mS_cm2"] * n2 * n2, p["E_K_mV"]),
            (p["g_L_mS_cm2"], p["E_L_mV"]),
            (ge, p["E_e_mV"]),
            (gi, p["E_i_mV"]),
        ]
        return {
            "v": membrane(p["C_uF_cm2"], channels, drive),
            "m": (-(am + bm), am),
            "h": (-(ah + bh), ah),
            "n": (-(an + bn), an),
            "ge": (-1.0 / p["tau_e_ms"], 0.0),
            "gi": (-1.0 / p["tau_i_ms"], 0.0),
        }
