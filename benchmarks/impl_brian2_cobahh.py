"""COBAHH in Brian2 (``examples/COBAHH.py`` equations, ``method='exponential_euler'``, threshold
``v > -20*mV`` with ``refractory=3*ms``, no reset) on the *identical* network cluster-sim builds
(same synapses, weights and initial v/ge/gi; gates start at 0 as in the example), with the 1 ms
synaptic delay of ``jobs/cobahh.toml``. Single-threaded (``devices.cpp_standalone.openmp_threads
= 0``; runtime mode is single-threaded Cython). Spikes recorded with a SpikeMonitor (cluster-sim
records all spikes too).

Run phase = Brian2's own measurement of the simulation loop (``device._last_run_time``: in
standalone mode the time the C++ binary spends in ``network.run``; in runtime mode the time in
``Network.run`` after code generation/compilation).
"""
from __future__ import annotations

import os
import time

import numpy as np

from impl_cobahh_net import CobaNet


# The six Traub-Miles rates, two ways. Brian2's examples/COBAHH.py uses exprel (measured ~2x
# slower in cpp_standalone here, issue 14); the form with plain exp(...) - 1 is the fastest
# equivalent formulation, so benchmarks compare against both.
RATES = {
    "exprel": """
alpha_m = 0.32*(mV**-1)*4*mV/exprel((13*mV-v+VT)/(4*mV))/ms : Hz
beta_m = 0.28*(mV**-1)*5*mV/exprel((v-VT-40*mV)/(5*mV))/ms : Hz
alpha_h = 0.128*exp((17*mV-v+VT)/(18*mV))/ms : Hz
beta_h = 4./(1+exp((40*mV-v+VT)/(5*mV)))/ms : Hz
alpha_n = 0.032*(mV**-1)*5*mV/exprel((15*mV-v+VT)/(5*mV))/ms : Hz
beta_n = .5*exp((10*mV-v+VT)/(40*mV))/ms : Hz
""",
    "exp": """
alpha_m = 0.32*(mV**-1)*(13*mV-v+VT)/(exp((13*mV-v+VT)/(4*mV))-1.)/ms : Hz
beta_m = 0.28*(mV**-1)*(v-VT-40*mV)/(exp((v-VT-40*mV)/(5*mV))-1.)/ms : Hz
alpha_h = 0.128*exp((17*mV-v+VT)/(18*mV))/ms : Hz
beta_h = 4./(1+exp((40*mV-v+VT)/(5*mV)))/ms : Hz
alpha_n = 0.032*(mV**-1)*(15*mV-v+VT)/(exp((15*mV-v+VT)/(5*mV))-1.)/ms : Hz
beta_n = .5*exp((10*mV-v+VT)/(40*mV))/ms : Hz
""",
}


def simulate(net: CobaNet, mode: str, duration_ms: float = 1000.0, dt: float = 0.1, build_dir: str | None = None,
             sort_by_source: bool = True, rates: str = "exprel") -> dict:
    """``rates``: "exprel" (Brian2's examples/COBAHH.py) or "exp" (the same rates written with
    plain ``exp(...) - 1``, as in Brian2's older example and Brette et al. 2007; no guard at the
    removable singularity, which the threshold-crossing voltages never hit exactly)."""
    t_start = time.perf_counter()
    import brian2 as b2
    from brian2 import NeuronGroup, Network, SpikeMonitor, Synapses, defaultclock, ms, mV, nS, pF, siemens

    t_import = time.perf_counter() - t_start
    if mode == "cpp_standalone":
        b2.set_device("cpp_standalone", build_on_run=False, directory=build_dir)
        b2.prefs.devices.cpp_standalone.openmp_threads = 0
    else:
        b2.prefs.codegen.target = "cython"
    defaultclock.dt = dt * ms
    p = net.params
    ns = {
        "Cm": p["C_pF"] * pF, "gl": p["g_leak_nS"] * nS, "El": p["E_leak_mV"] * mV, "EK": p["E_k_mV"] * mV,
        "ENa": p["E_na_mV"] * mV, "g_na": p["g_na_nS"] * nS, "g_kd": p["g_kd_nS"] * nS, "VT": p["V_T_mV"] * mV,
        "Ee": p["E_e_mV"] * mV, "Ei": p["E_i_mV"] * mV, "taue": p["tau_e_ms"] * ms, "taui": p["tau_i_ms"] * ms,
    }
    eqs = """
dv/dt = (gl*(El-v)+ge*(Ee-v)+gi*(Ei-v)-
         g_na*(m*m*m)*h*(v-ENa)-
         g_kd*(n*n*n*n)*(v-EK))/Cm : volt
dm/dt = alpha_m*(1-m)-beta_m*m : 1
dn/dt = alpha_n*(1-n)-beta_n*n : 1
dh/dt = alpha_h*(1-h)-beta_h*h : 1
dge/dt = -ge*(1./taue) : siemens
dgi/dt = -gi*(1./taui) : siemens
"""
    if rates not in RATES:
        raise ValueError(f"rates = {rates!r}: use one of {sorted(RATES)}")
    eqs += RATES[rates]
    P = NeuronGroup(net.n, model=eqs, threshold=f"v > {p['threshold_mV']}*mV", refractory=p["refractory_ms"] * ms,
                    method="exponential_euler", namespace=ns)
    P.v = net.v0 * mV
    P.ge = net.ge0 * nS
    P.gi = net.gi0 * nS
    Ce = Synapses(P, P, "w : siemens", on_pre="ge += w", delay=net.delay_ms * ms)
    Ci = Synapses(P, P, "w : siemens", on_pre="gi += w", delay=net.delay_ms * ms)
    # Synapses ordered by source, then target, as Brian2's own connect(p=...) generates them
    # (memory order of a spiking source's synapses matters for propagation).
    oe = np.lexsort((net.exc_post, net.exc_pre)) if sort_by_source else np.arange(net.exc_pre.size)
    oi = np.lexsort((net.inh_post, net.inh_pre)) if sort_by_source else np.arange(net.inh_pre.size)
    Ce.connect(i=net.exc_pre[oe], j=net.exc_post[oe])
    Ci.connect(i=net.inh_pre[oi], j=net.inh_post[oi])
    Ce.w = net.exc_w[oe] * nS
    Ci.w = net.inh_w[oi] * nS
    mon = SpikeMonitor(P)
    network = Network(P, Ce, Ci, mon)
    t_run0 = time.perf_counter()
    network.run(duration_ms * ms)
    if mode == "cpp_standalone":
        b2.device.build(directory=build_dir, compile=True, run=True, debug=False, with_output=False)
    wall = time.perf_counter() - t_run0
    run_s = float(b2.device._last_run_time)
    n_spikes = int(mon.num_spikes)
    timers = getattr(b2.device, "timers", {}) if mode == "cpp_standalone" else {}
    return {"run_s": run_s, "build_s": (time.perf_counter() - t_start) - run_s, "import_s": t_import,
            "run_plus_build_wall_s": wall, "n_spikes": n_spikes, "rate_hz": n_spikes / (net.n * duration_ms * 1e-3),
            "timers": timers, "threads": os.environ.get("OMP_NUM_THREADS")}
