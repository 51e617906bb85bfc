"""The locust antennal lobe (PSST tutorial: 90 PN + 30 LN, Bazhenov 2001 kinetics) in Brian2
cpp_standalone, written from the PSST equations independently of cluster-sim's model code, on
the identical network (connectivity, weights, odor-driven cells and initial state exported by
``impl_al_net.py``). RK4 at dt 0.01 ms, single-threaded.

Units: the PSST ones (mV, ms, mS/cm², µA/cm², µF/cm², mM) as dimensionless numbers, time
derivatives divided by ``ms``. Rate functions in the plain ``x/(exp(x)-1)`` form (Brian2's
``exprel`` is ~2× slower). Graded synapses keep one open fraction per presynaptic neuron (the
ODE is the same for all its synapses, PSST initialises them to 0) and reach the targets as
Brian2 summed variables: g_syn(post) = Σ w·o(pre), evaluated once per step (cluster-sim couples
them at every RK4 stage: the two agree statistically, not spike for spike). Spikes: upward
crossings of 0 mV (``refractory='v > 0'``), times on the step grid (cluster-sim interpolates).

Run phase = Brian2's own measurement of ``network.run`` in the standalone binary
(``device._last_run_time``).
"""
from __future__ import annotations

import os
import time

import numpy as np

from impl_al_net import load_al_network

PHI_K = 3.0 ** ((22.0 - 36.0) / 10.0)
PHI_A = 3.0 ** ((36.0 - 23.5) / 10.0)
PHI_KCA = 2.3 ** ((26.0 - 23.0) / 10.0)

# Traub-Miles rates in u = v + 50 (PSST's shifted voltage), times the 22 °C factor.
_TRAUB_K = """
u = v + 50 : 1
a_n = {an}*(15 - u)/(exp((15 - u)/5) - 1) : 1
b_n = 0.5*exp((10 - u)/40) : 1
"""
_TRAUB_NA = """
a_m = 0.32*(13 - u)/(exp((13 - u)/4) - 1) : 1
b_m = 0.28*(u - 40)/(exp((u - 40)/5) - 1) : 1
a_h = 0.128*exp((17 - u)/18) : 1
b_h = 4/(1 + exp((40 - u)/5)) : 1
"""

PN_EQS = """
dv/dt = (-(gL*(v - EL) + gKL*(v - EKL) + gK*n_k**4*(v - EK) + gNa*m_na**3*h_na*(v - ENa)
          + gA*m_a**4*h_a*(v - EA)) - g_gaba*(v - E_gaba) + I_odor)/C/ms : 1
dn_k/dt = PHI_K*(a_n*(1 - n_k) - b_n*n_k)/ms : 1
dm_na/dt = PHI_K*(a_m*(1 - m_na) - b_m*m_na)/ms : 1
dh_na/dt = PHI_K*(a_h*(1 - h_na) - b_h*h_na)/ms : 1
dm_a/dt = (m_a0 - m_a)*inv_tau_ma/ms : 1
dh_a/dt = (h_a0 - h_a)*inv_tau_ha/ms : 1
m_a0 = 1/(1 + exp(-(v + 60)/8.5)) : 1
h_a0 = 1/(1 + exp((v + 78)/6)) : 1
inv_tau_ma = (exp((v + 35.82)/19.69) + exp(-(v + 79.69)/12.7) + 0.37)*PHI_A : 1
inv_tau_ha = int(v < -63)*(exp((v + 46.05)/5) + exp(-(v + 238.4)/37.45))*PHI_A + int(v >= -63)*PHI_A/19 : 1
do_ach/dt = (ach_alpha*T_ach*(1 - o_ach) - ach_beta*o_ach)/ms : 1
T_ach = ach_A*int(t - lastspike >= ach_delay)*int(t - lastspike < ach_delay + ach_tmax) : 1
I_odor = odor_amp*odor(t/ms) : 1
odor_amp : 1 (constant)
g_gaba : 1
""" + _TRAUB_K + _TRAUB_NA

LN_EQS = """
dv/dt = (-(gL*(v - EL) + gKL*(v - EKL) + gK*n_k**4*(v - EK) + i_ca + gKCa*m_kca*(v - EKCa))
         - g_gaba*(v - E_gaba) - g_ach*(v - E_ach) + I_odor)/C/ms : 1
dn_k/dt = PHI_K*(a_n*(1 - n_k) - b_n*n_k)/ms : 1
dm_ca/dt = (m_ca0 - m_ca)/1.5/ms : 1
dh_ca/dt = (h_ca0 - h_ca)*inv_tau_hca/ms : 1
dm_kca/dt = PHI_KCA*(0.01*ca*(1 - m_kca) - 0.02*m_kca)/ms : 1
dca/dt = (-A_Ca*i_ca + (Ca0 - ca)/tau_Ca)/ms : 1
i_ca = gCa*m_ca**2*h_ca*(v - ECa) : 1
m_ca0 = 1/(1 + exp(-(v + 20)/6.5)) : 1
h_ca0 = 1/(1 + exp((v + 25)/12)) : 1
inv_tau_hca = 1/(0.3*exp((v - 40)/13) + 0.002*exp((60 - v)/29)) : 1
do_gaba/dt = (gaba_alpha*T_gaba*(1 - o_gaba) - gaba_beta*o_gaba)/ms : 1
T_gaba = 1/(1 + exp(-(v - gaba_V0)/gaba_sigma)) : 1
I_odor = odor_amp*odor(t/ms) : 1
odor_amp : 1 (constant)
g_gaba : 1
g_ach : 1
""" + _TRAUB_K


def _pn_ns(p: dict) -> dict:
    return {"C": p["C_uF_cm2"], "gL": p["g_L_mS_cm2"], "EL": p["E_L_mV"], "gKL": p["g_KL_mS_cm2"], "EKL": p["E_KL_mV"],
            "gK": p["g_K_mS_cm2"], "EK": p["E_K_mV"], "gNa": p["g_Na_mS_cm2"], "ENa": p["E_Na_mV"],
            "gA": p["g_A_mS_cm2"], "EA": p["E_A_mV"], "PHI_K": PHI_K, "PHI_A": PHI_A}


def _ln_ns(p: dict) -> dict:
    return {"C": p["C_uF_cm2"], "gL": p["g_L_mS_cm2"], "EL": p["E_L_mV"], "gKL": p["g_KL_mS_cm2"], "EKL": p["E_KL_mV"],
            "gK": p["g_K_mS_cm2"], "EK": p["E_K_mV"], "gCa": p["g_Ca_mS_cm2"], "ECa": p["E_Ca_mV"],
            "gKCa": p["g_KCa_mS_cm2"], "EKCa": p["E_KCa_mV"], "A_Ca": p["A_Ca"], "Ca0": p["Ca0_mM"],
            "tau_Ca": p["tau_Ca_ms"], "PHI_K": PHI_K, "PHI_KCA": PHI_KCA}


def simulate(net_npz: str, duration_ms: float | None = None, build_dir: str | None = None) -> dict:
    t_start = time.perf_counter()
    import brian2 as b2
    from brian2 import Function, Network, NeuronGroup, SpikeMonitor, Synapses, defaultclock, ms

    meta, arr = load_al_network(net_npz)
    duration_ms = float(duration_ms or meta["duration_ms"])
    b2.set_device("cpp_standalone", build_on_run=False, directory=build_dir)
    b2.prefs.devices.cpp_standalone.openmp_threads = 0
    defaultclock.dt = meta["dt_ms"] * ms

    # The PSST odor time course (stimulus.params of jobs/antennal_lobe.toml), as a C++ function.
    (stim_name, stim), = meta["stimuli"].items()
    sp = stim["params"]
    odor_code = f"""
    double odor(double t) {{
        if (t < {sp['start_ms']!r}) return 0.0;
        if (t < {sp['stop_ms']!r}) return 1.0 - exp(-(t - {sp['start_ms']!r}) / {sp['rise_tau_ms']!r});
        return {sp['release_level']!r} * exp(-(t - {sp['stop_ms']!r}) / {sp['decay_tau_ms']!r});
    }}"""
    odor = Function(lambda t: 0.0 * t, arg_units=[1], return_unit=1)  # Python body unused (C++ only)
    odor.implementations.add_implementation("cpp", odor_code, name="odor")

    projs = meta["projections"]
    ach = next(p for p in projs.values() if p["synapse"] == "ach_pulse")
    gaba = next(p for p in projs.values() if p["synapse"] == "gaba_a_graded")
    pops = meta["populations"]
    ns_common = {"odor": odor, "E_gaba": gaba["params"]["E_mV"], "E_ach": ach["params"]["E_mV"],
                 "ach_alpha": ach["params"]["alpha_per_mM_ms"], "ach_beta": ach["params"]["beta_per_ms"],
                 "ach_A": ach["params"]["A_mM"], "ach_tmax": ach["params"]["t_max_ms"] * ms,
                 "ach_delay": ach["delay_ms"] * ms,
                 "gaba_alpha": gaba["params"]["alpha_per_mM_ms"], "gaba_beta": gaba["params"]["beta_per_ms"],
                 "gaba_V0": gaba["params"]["V0_mV"], "gaba_sigma": gaba["params"]["sigma_mV"]}
    pn_p, ln_p = pops["PN"]["params"], pops["LN"]["params"]
    PN = NeuronGroup(pops["PN"]["count"], PN_EQS.format(an=0.02), threshold=f"v > {pn_p['threshold_mV']!r}",
                     refractory=f"v > {pn_p['threshold_mV']!r}", method="rk4", namespace={**ns_common, **_pn_ns(pn_p)},
                     name="PN")
    LN = NeuronGroup(pops["LN"]["count"], LN_EQS.format(an=0.02), threshold=f"v > {ln_p['threshold_mV']!r}",
                     refractory=f"v > {ln_p['threshold_mV']!r}", method="rk4", namespace={**ns_common, **_ln_ns(ln_p)},
                     name="LN")
    for name, group in (("PN", PN), ("LN", LN)):
        for var in pops[name]["variables"]:
            setattr(group, var, arr[f"init/{name}/{var}"])
        group.odor_amp = arr[f"stim/{stim_name}/{name}"]
    PN.o_ach = 0.0
    LN.o_gaba = 0.0

    objects = [PN, LN]
    groups = {"PN": PN, "LN": LN}
    for key, proj in projs.items():
        src, tgt = groups[proj["source"]], groups[proj["target"]]
        var = "o_ach" if proj["synapse"] == "ach_pulse" else "o_gaba"
        gvar = "g_ach" if proj["synapse"] == "ach_pulse" else "g_gaba"
        S = Synapses(src, tgt, f"w : 1 (constant)\n{gvar}_post = w*{var}_pre : 1 (summed)", name=f"S_{key}")
        S.connect(i=arr[f"proj/{key}/pre"], j=arr[f"proj/{key}/post"])
        S.w = arr[f"proj/{key}/w"]
        objects.append(S)
    mons = {"PN": SpikeMonitor(PN), "LN": SpikeMonitor(LN)}
    network = Network(*objects, *mons.values())
    t_run0 = time.perf_counter()
    network.run(duration_ms * ms)
    b2.device.build(directory=build_dir, compile=True, run=True, debug=False, with_output=False)
    wall = time.perf_counter() - t_run0
    run_s = float(b2.device._last_run_time)
    counts = {name: np.bincount(np.asarray(m.i[:], np.int64), minlength=pops[name]["count"]).tolist()
              for name, m in mons.items()}
    rates = {name: float(sum(c)) / (len(c) * duration_ms * 1e-3) for name, c in counts.items()}
    return {"run_s": run_s, "build_s": (time.perf_counter() - t_start) - run_s, "run_plus_build_wall_s": wall,
            "n_spikes": int(sum(sum(c) for c in counts.values())), "rates_hz": rates, "counts": counts,
            "simulated_ms": duration_ms, "ms_per_step": 1e3 * run_s / (duration_ms / meta["dt_ms"]),
            "threads": os.environ.get("OMP_NUM_THREADS")}
