"""A passive membrane with exponential synaptic conductances: the analytic test bed for event
delivery (its response to one input is known in closed form)."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from cluster_sim.models.base import Drive, NeuronModel, Terms, any_value, membrane, non_negative, positive


class Passive(NeuronModel):
    name = "passive"
    variables = ("v", "ge", "gi")
    event_vars = ("ge", "gi")
    description = "leaky membrane with exponential ge/gi conductances (no spikes unless driven past threshold)"
    defaults = {
        "C_uF_cm2": 1.0, "g_L_mS_cm2": 0.1, "E_L_mV": -65.0,
        "E_e_mV": 0.0, "E_i_mV": -80.0, "tau_e_ms": 5.0, "tau_i_ms": 10.0,
        "threshold_mV": 1000.0, "refractory_ms": 0.0, "init_v_mV": -65.0,
    }
    param_ranges = {
        "C_uF_cm2": positive("membrane capacitance"), "g_L_mS_cm2": non_negative("a conductance"),
        "E_L_mV": any_value("a reversal potential"), "E_e_mV": any_value("a reversal potential"),
        "E_i_mV": any_value("a reversal potential"),
        "tau_e_ms": positive("a time constant"), "tau_i_ms": positive("a time constant"),
        "threshold_mV": any_value("spike threshold"), "refractory_ms": non_negative("refractory period"),
        "init_v_mV": any_value("initial membrane potential"),
    }

    def initial_state(self, p: Mapping[str, float], n: int, normal: Callable[[str], Any]) -> dict[str, Any]:
        ones = np.ones(n)
        return {"v": p["init_v_mV"] * ones, "ge": 0.0 * ones, "gi": 0.0 * ones}

    def terms(self, ops: Any, p: Mapping[str, float], y: Mapping[str, Any], drive: Drive) -> Terms:
        channels = [(p["g_L_mS_cm2"], p["E_L_mV"]), (y["ge"], p["E_e_mV"]), (y["gi"], p["E_i_mV"])]
        return {
            "v": membrane(p["C_uF_cm2"], channels, drive),
            "ge": (-1.0 / p["tau_e_ms"], 0.0),
            "gi": (-1.0 / p["tau_i_ms"], 0.0),
        }
