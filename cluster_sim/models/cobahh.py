"""COBAHH neuron (Brette et al. 2007, benchmark 3; Brian2 ``examples/COBAHH.py``): Traub–Miles
HH with exponentially decaying excitatory and inhibitory conductances. Absolute units
(pF, nS, mV, ms, pA) as in the benchmark; membrane area 20000 µm²."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from cluster_sim.models._rates import traub_rates
from cluster_sim.models.base import Drive, NeuronModel, Terms, any_value, membrane, non_negative, positive


class CobaHH(NeuronModel):
    name = "cobahh"
    variables = ("v", "m", "h", "n", "ge", "gi")
    conductance_unit = "nS"
    current_unit = "pA"
    capacitance_key = "C_pF"
    event_vars = ("ge", "gi")
    description = "Traub-Miles HH with exponential ge/gi conductances (Brette et al. 2007, COBAHH)"
    defaults = {
        "C_pF": 200.0,  # 1 µF/cm² × 20000 µm²
        "g_leak_nS": 10.0,  # 5e-5 S/cm² × area
        "g_na_nS": 20000.0,  # 100 mS/cm² × area
        "g_kd_nS": 6000.0,  # 30 mS/cm² × area
        "E_leak_mV": -60.0,
        "E_k_mV": -90.0,
        "E_na_mV": 50.0,
        "V_T_mV": -63.0,
        "E_e_mV": 0.0,
        "E_i_mV": -80.0,
        "tau_e_ms": 5.0,
        "tau_i_ms": 10.0,
        "threshold_mV": -20.0,
        "refractory_ms": 3.0,
        # Initial conditions as in Brian2's example: v = El + (5·randn - 5) mV,
        # ge = (1.5·randn + 4)·10 nS, gi = (12·randn + 20)·10 nS; gates start at 0.
        "init_v_sd_mV": 5.0,
        "init_v_offset_mV": -5.0,
        "init_ge_mean_nS": 40.0,
        "init_ge_sd_nS": 15.0,
        "init_gi_mean_nS": 200.0,
        "init_gi_sd_nS": 120.0,
    }
    param_ranges = {
        "C_pF": positive("membrane capacitance"),
        "g_leak_nS": non_negative("a conductance"), "g_na_nS": non_negative("a conductance"),
        "g_kd_nS": non_negative("a conductance"),
        "E_leak_mV": any_value("a reversal potential"), "E_k_mV": any_value("a reversal potential"),
        "E_na_mV": any_value("a reversal potential"), "V_T_mV": any_value("the Traub-Miles voltage offset"),
        "E_e_mV": any_value("a reversal potential"), "E_i_mV": any_value("a reversal potential"),
        "tau_e_ms": positive("a time constant"), "tau_i_ms": positive("a time constant"),
        "threshold_mV": any_value("spike threshold"), "refractory_ms": non_negative("refractory period"),
        "init_v_sd_mV": non_negative("a standard deviation"), "init_v_offset_mV": any_value("an offset"),
        "init_ge_mean_nS": any_value("a mean initial conductance"), "init_ge_sd_nS": non_negative("a standard deviation"),
        "init_gi_mean_nS": any_value("a mean initial conductance"), "init_gi_sd_nS": non_negative("a standard deviation"),
    }

    def initial_state(self, p: Mapping[str, float], n: int, normal: Callable[[str], Any]) -> dict[str, Any]:
        zeros = np.zeros(n)
        return {
            "v": p["E_leak_mV"] + p["init_v_offset_mV"] + p["init_v_sd_mV"] * normal("v"),
            "m": zeros.copy(),
            "h": zeros.copy(),
            "n": zeros.copy(),
            "ge": p["init_ge_mean_nS"] + p["init_ge_sd_nS"] * normal("ge"),
            "gi": p["init_gi_mean_nS"] + p["init_gi_sd_nS"] * normal("gi"),
        }

    def terms(self, ops: Any, p: Mapping[str, float], y: Mapping[str, Any], drive: Drive) -> Terms:
        v, m, h, n, ge, gi = (y[k] for k in self.variables)
        r = traub_rates(ops, v - p["V_T_mV"], ops.small, 0.032)
        g_na = p["g_na_nS"] * (m * m * m) * h
        n2 = n * n
        g_k = p["g_kd_nS"] * (n2 * n2)
        a_v, b_v = membrane(p["C_pF"], [(p["g_leak_nS"], p["E_leak_mV"]), (ge, p["E_e_mV"]), (gi, p["E_i_mV"]),
                                        (g_na, p["E_na_mV"]), (g_k, p["E_k_mV"])], drive)
        return {
            "v": (a_v, b_v),
            "m": (-(r.am + r.bm), r.am),
            "h": (-(r.ah + r.bh), r.ah),
            "n": (-(r.an + r.bn), r.an),
            "ge": (-1.0 / p["tau_e_ms"], 0.0),
            "gi": (-1.0 / p["tau_i_ms"], 0.0),
        }

