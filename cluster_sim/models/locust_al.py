"""Locust antennal-lobe projection neuron (PN) and local neuron (LN) of the PSST tutorial
(Mohanta & Assisi 2022, after Bazhenov et al. 2001). Per-area units: mS/cm², µF/cm², µA/cm²,
mV, ms; [Ca] in mM. Parameters and kinetics as extracted in shared/reference/psst_locust_al.md."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from cluster_sim.models._rates import traub_rates
from cluster_sim.models.base import Bound, Drive, NeuronModel, Terms, any_value, membrane, non_negative, positive

PHI_K = 3.0 ** ((22.0 - 36.0) / 10.0)  # K and Na kinetics at 22 °C
PHI_A = 3.0 ** ((36.0 - 23.5) / 10.0)
PHI_KCA = 2.3 ** ((26.0 - 23.0) / 10.0)
V_SHIFT = -50.0  # the PSST rate functions are written in V' = V + 50


def _ranges(defaults: Mapping[str, float]) -> dict[str, Bound]:
    """Ranges of the PSST parameters by their (unit-carrying) names."""
    out: dict[str, Bound] = {}
    for name in defaults:
        if name.startswith("C_"):
            out[name] = positive("membrane capacitance")
        elif name.startswith("g_"):
            out[name] = non_negative("a conductance")
        elif name.startswith("tau_"):
            out[name] = positive("a time constant")
        elif name in ("refractory_ms", "init_jitter", "A_Ca", "Ca0_mM"):
            out[name] = non_negative({"refractory_ms": "refractory period", "init_jitter": "a relative spread",
                                      "A_Ca": "calcium influx per current", "Ca0_mM": "a concentration"}[name])
        elif name.endswith("_mV"):
            out[name] = any_value("a potential")
    return out


def _jittered(p: Mapping[str, float], n: int, normal: Callable[[str], Any], base: Mapping[str, float]) -> dict[str, Any]:
    """PSST's initial state: fixed values times (1 + jitter·N(0,1)), independently per variable."""
    return {k: v * (1.0 + p["init_jitter"] * normal(k)) * np.ones(n) for k, v in base.items()}


class LocustPN(NeuronModel):
    name = "locust_pn"
    variables = ("v", "n_k", "m_na", "h_na", "m_a", "h_a")
    description = "PSST locust AL projection neuron: leak, K-leak, K (n⁴), Na (m³h), A-type K (m⁴h)"
    defaults = {
        "C_uF_cm2": 1.0,
        "g_L_mS_cm2": 0.15, "E_L_mV": -55.0,
        "g_KL_mS_cm2": 0.05, "E_KL_mV": -95.0,
        "g_K_mS_cm2": 10.0, "E_K_mV": -95.0,
        "g_Na_mS_cm2": 100.0, "E_Na_mV": 50.0,
        "g_A_mS_cm2": 10.0, "E_A_mV": -95.0,
        "threshold_mV": 0.0, "refractory_ms": 0.0,
        "init_v_mV": -70.0, "init_jitter": 0.01,
    }
    param_ranges = _ranges(defaults)

    def initial_state(self, p: Mapping[str, float], n: int, normal: Callable[[str], Any]) -> dict[str, Any]:
        base = {"v": p["init_v_mV"], "n_k": 0.0, "m_na": 0.0, "h_na": 0.0, "m_a": 0.0, "h_a": 0.0}
        return _jittered(p, n, normal, base)

    def terms(self, ops: Any, p: Mapping[str, float], y: Mapping[str, Any], drive: Drive) -> Terms:
        v = y["v"]
        r = traub_rates(ops, v - V_SHIFT, ops.small, 0.02)
        # A-current (T = 36 °C): steady states and time constants of m and h
        m_a0 = 1.0 / (1.0 + ops.exp(-(v + 60.0) * (1.0 / 8.5)))
        h_a0 = 1.0 / (1.0 + ops.exp((v + 78.0) * (1.0 / 6.0)))
        inv_tau_ma = (ops.exp((v + 35.82) * (1.0 / 19.69)) + ops.exp(-(v + 79.69) * (1.0 / 12.7)) + 0.37) * PHI_A
        inv_tau_ha = ops.where(v < -63.0,
                               (ops.exp((v + 46.05) * 0.2) + ops.exp(-(v + 238.4) * (1.0 / 37.45))) * PHI_A,
                               PHI_A / 19.0)
        n2 = y["n_k"] * y["n_k"]
        m_a2 = y["m_a"] * y["m_a"]
        channels = [
            (p["g_L_mS_cm2"], p["E_L_mV"]),
            (p["g_KL_mS_cm2"], p["E_KL_mV"]),
            (p["g_K_mS_cm2"] * n2 * n2, p["E_K_mV"]),
            (p["g_Na_mS_cm2"] * y["m_na"] * y["m_na"] * y["m_na"] * y["h_na"], p["E_Na_mV"]),
            (p["g_A_mS_cm2"] * m_a2 * m_a2 * y["h_a"], p["E_A_mV"]),
        ]
        return {
            "v": membrane(p["C_uF_cm2"], channels, drive),
            "n_k": (-(r.an + r.bn) * PHI_K, r.an * PHI_K),
            "m_na": (-(r.am + r.bm) * PHI_K, r.am * PHI_K),
            "h_na": (-(r.ah + r.bh) * PHI_K, r.ah * PHI_K),
            "m_a": (-inv_tau_ma, m_a0 * inv_tau_ma),
            "h_a": (-inv_tau_ha, h_a0 * inv_tau_ha),
        }


class LocustLN(NeuronModel):
    name = "locust_ln"
    variables = ("v", "n_k", "m_ca", "h_ca", "m_kca", "ca")
    description = "PSST locust AL local neuron: leak, K-leak, K (n⁴), Ca (m²h), K(Ca), calcium pool"
    defaults = {
        "C_uF_cm2": 1.0,
        "g_L_mS_cm2": 0.15, "E_L_mV": -50.0,
        "g_KL_mS_cm2": 0.02, "E_KL_mV": -95.0,
        "g_K_mS_cm2": 10.0, "E_K_mV": -95.0,
        "g_Ca_mS_cm2": 3.0, "E_Ca_mV": 140.0,
        "g_KCa_mS_cm2": 0.3, "E_KCa_mV": -90.0,
        "A_Ca": 2e-4,  # mM·cm²/(ms·µA)
        "Ca0_mM": 2.4e-4,
        "tau_Ca_ms": 150.0,
        "threshold_mV": 0.0, "refractory_ms": 0.0,
        "init_v_mV": -70.0, "init_jitter": 0.01,
    }
    param_ranges = _ranges(defaults)

    def initial_state(self, p: Mapping[str, float], n: int, normal: Callable[[str], Any]) -> dict[str, Any]:
        base = {"v": p["init_v_mV"], "n_k": 0.0, "m_ca": 0.0, "h_ca": 0.0, "m_kca": 0.0, "ca": p["Ca0_mM"]}
        return _jittered(p, n, normal, base)

    def terms(self, ops: Any, p: Mapping[str, float], y: Mapping[str, Any], drive: Drive) -> Terms:
        v, ca = y["v"], y["ca"]
        r = traub_rates(ops, v - V_SHIFT, ops.small, 0.02, with_na=False)
        m_ca0 = 1.0 / (1.0 + ops.exp(-(v + 20.0) * (1.0 / 6.5)))
        h_ca0 = 1.0 / (1.0 + ops.exp((v + 25.0) * (1.0 / 12.0)))
        inv_tau_hca = 1.0 / (0.3 * ops.exp((v - 40.0) * (1.0 / 13.0)) + 0.002 * ops.exp((60.0 - v) * (1.0 / 29.0)))
        alpha_kca = 0.01 * ca
        n2 = y["n_k"] * y["n_k"]
        g_ca = p["g_Ca_mS_cm2"] * y["m_ca"] * y["m_ca"] * y["h_ca"]
        i_ca = g_ca * (v - p["E_Ca_mV"])
        channels = [
            (p["g_L_mS_cm2"], p["E_L_mV"]),
            (p["g_KL_mS_cm2"], p["E_KL_mV"]),
            (p["g_K_mS_cm2"] * n2 * n2, p["E_K_mV"]),
            (g_ca, p["E_Ca_mV"]),
            (p["g_KCa_mS_cm2"] * y["m_kca"], p["E_KCa_mV"]),
        ]
        return {
            "v": membrane(p["C_uF_cm2"], channels, drive),
            "n_k": (-(r.an + r.bn) * PHI_K, r.an * PHI_K),
            "m_ca": (-1.0 / 1.5, m_ca0 * (1.0 / 1.5)),
            "h_ca": (-inv_tau_hca, h_ca0 * inv_tau_hca),
            "m_kca": (-(alpha_kca + 0.02) * PHI_KCA, alpha_kca * PHI_KCA),
            "ca": (-1.0 / p["tau_Ca_ms"], -p["A_Ca"] * i_ca + p["Ca0_mM"] / p["tau_Ca_ms"]),
        }
