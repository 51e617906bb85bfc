"""Independent NumPy implementation of the PSST locust antennal lobe (Mohanta & Assisi 2022,
after Bazhenov et al. 2001), typed from shared/reference/psst_locust_al.md.

PN: leak, K leak, delayed-rectifier K (n⁴), Na (m³h), transient A-type K (m⁴h).
LN: leak, K leak, delayed-rectifier K (n⁴), Ca (m²h), K(Ca) (m), calcium pool.
Synapses: cholinergic PN→LN driven by a transmitter pulse after each presynaptic spike, GABA_A
LN→PN/LN graded on the presynaptic voltage; d[O]/dt = α(1-[O])[T] - β[O], one [O] per source
neuron (all synapses of a source obey the same ODE from the same initial value 0);
I_syn,i = (Σ_syn w·[O]_src)·(V_i - E_syn).
Classic RK4, the stimulus and [T] evaluated at each stage time; spikes are upward crossings of
0 mV with linearly interpolated times, the last-spike time held constant within a step.

Units: mV, ms, mS/cm², µF/cm², µA/cm², mM. Vectorised over neurons; float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# ---------------------------------------------------------------- parameters (doc tables)
PN = dict(C=1.0, gL=0.15, EL=-55.0, gKL=0.05, EKL=-95.0, gK=10.0, EK=-95.0,
          gNa=100.0, ENa=50.0, gA=10.0, EA=-95.0)
LN = dict(C=1.0, gL=0.15, EL=-50.0, gKL=0.02, EKL=-95.0, gK=10.0, EK=-95.0,
          gCa=3.0, ECa=140.0, gKCa=0.3, EKCa=-90.0, A_Ca=2e-4, Ca0=2.4e-4, tau_Ca=150.0)
PHI_22 = 3.0 ** ((22.0 - 36.0) / 10.0)     # K and Na kinetics at T = 22 °C
PHI_A = 3.0 ** ((36.0 - 23.5) / 10.0)      # A current at T = 36 °C
PHI_KCA = 2.3 ** ((26.0 - 23.0) / 10.0)    # K(Ca) at T = 26 °C
ACH = dict(alpha=10.0, beta=0.2, E=0.0, A=0.5, t_max=0.3)
GABA = dict(alpha=10.0, beta=0.16, E=-70.0, V0=-20.0, sigma=1.5)
THRESHOLD = 0.0


def _x_over_expm1(x):
    """x / (exp(x) - 1), 1 at x = 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = x / np.expm1(x)
    tiny = np.abs(x) < 1e-12
    if tiny.any():
        r = np.where(tiny, 1.0 - 0.5 * x, r)
    return r


# ---------------------------------------------------------------- kinetics (doc "Gating kinetics")
def k_rates(V):
    Vp = V + 50.0
    # α_n = 0.02 (15 - V') / (exp((15 - V')/5) - 1) = 0.02·5·x/(e^x - 1), x = (15 - V')/5
    a_n = 0.02 * 5.0 * _x_over_expm1((15.0 - Vp) / 5.0)
    b_n = 0.5 * np.exp((10.0 - Vp) / 40.0)
    return a_n, b_n


def na_rates(V):
    Vp = V + 50.0
    a_m = 0.32 * 4.0 * _x_over_expm1((13.0 - Vp) / 4.0)   # 0.32(13-V')/(exp((13-V')/4)-1)
    b_m = 0.28 * 5.0 * _x_over_expm1((Vp - 40.0) / 5.0)   # 0.28(V'-40)/(exp((V'-40)/5)-1)
    a_h = 0.128 * np.exp((17.0 - Vp) / 18.0)
    b_h = 4.0 / (np.exp((40.0 - Vp) / 5.0) + 1.0)
    return a_m, b_m, a_h, b_h


def a_kinetics(V):
    m0 = 1.0 / (1.0 + np.exp(-(V + 60.0) / 8.5))
    h0 = 1.0 / (1.0 + np.exp((V + 78.0) / 6.0))
    tau_m = 1.0 / (np.exp((V + 35.82) / 19.69) + np.exp(-(V + 79.69) / 12.7) + 0.37) / PHI_A
    tau_h = np.where(V < -63.0, 1.0 / (np.exp((V + 46.05) / 5.0) + np.exp(-(V + 238.4) / 37.45)) / PHI_A,
                     19.0 / PHI_A)
    return m0, tau_m, h0, tau_h


def ca_kinetics(V):
    m0 = 1.0 / (1.0 + np.exp(-(V + 20.0) / 6.5))
    h0 = 1.0 / (1.0 + np.exp((V + 25.0) / 12.0))
    tau_m = 1.5
    tau_h = 0.3 * np.exp((V - 40.0) / 13.0) + 0.002 * np.exp((60.0 - V) / 29.0)
    return m0, tau_m, h0, tau_h


def psst_odor(t: float, start: float, stop: float, rise: float, decay: float, release: float = 0.9996) -> float:
    if t < start:
        return 0.0
    if t < stop:
        return 1.0 - math.exp(-(t - start) / rise)
    return release * math.exp(-(t - stop) / decay)


# ---------------------------------------------------------------- network
@dataclass
class Coupling:
    """One projection: dense weight matrix W[target, source] and its synapse kind."""

    kind: str  # "ach" (pulse) or "gaba" (graded)
    source: str  # "PN" or "LN"
    target: str
    W: np.ndarray
    delay: float = 0.0


@dataclass
class ALNetwork:
    init: dict  # {"PN": {var: array}, "LN": {var: array}}
    couplings: list
    amp: dict  # {"PN": array, "LN": array} µA/cm²
    odor: dict  # start, stop, rise, decay, release
    n: dict = field(default_factory=dict)


PN_VARS = ("v", "n_k", "m_na", "h_na", "m_a", "h_a")
LN_VARS = ("v", "n_k", "m_ca", "h_ca", "m_kca", "ca")


class ALReference:
    """State: y = {("PN", var): array, ("LN", var): array, ("syn", j): array per source}."""

    def __init__(self, net: ALNetwork, dt: float = 0.01) -> None:
        self.net, self.dt = net, dt
        self.y = {}
        for pop, names in (("PN", PN_VARS), ("LN", LN_VARS)):
            for v in names:
                self.y[(pop, v)] = np.array(net.init[pop][v], dtype=np.float64)
        for j, c in enumerate(net.couplings):
            self.y[("syn", j)] = np.zeros(c.W.shape[1])
        self.fire = {pop: np.full(self.y[(pop, "v")].size, -1e9) for pop in ("PN", "LN")}
        self.k = 0

    # dX/dt for every state array at time t, given the last-spike times (constant over a step)
    def deriv(self, t: float, y: dict) -> dict:
        net = self.net
        d = {}
        g_syn = {"PN": 0.0, "LN": 0.0}
        gE_syn = {"PN": 0.0, "LN": 0.0}
        for j, c in enumerate(net.couplings):
            o = y[("syn", j)]
            if c.kind == "gaba":
                T = 1.0 / (1.0 + np.exp(-(y[(c.source, "v")] - GABA["V0"]) / GABA["sigma"]))
                a, b, E = GABA["alpha"], GABA["beta"], GABA["E"]
            else:
                since = t - self.fire[c.source] - c.delay
                T = np.where((since >= 0.0) & (since < ACH["t_max"]), ACH["A"], 0.0)
                a, b, E = ACH["alpha"], ACH["beta"], ACH["E"]
            d[("syn", j)] = a * (1.0 - o) * T - b * o
            g = c.W @ o
            g_syn[c.target] = g_syn[c.target] + g
            gE_syn[c.target] = gE_syn[c.target] + g * E
        y_odor = psst_odor(t, **net.odor)

        # --- PN
        V = y[("PN", "v")]
        n, m, h, ma, ha = (y[("PN", k)] for k in PN_VARS[1:])
        p = PN
        I_ion = (p["gL"] * (V - p["EL"]) + p["gKL"] * (V - p["EKL"]) + p["gK"] * (n * n) * (n * n) * (V - p["EK"])
                 + p["gNa"] * (m * m * m) * h * (V - p["ENa"]) + p["gA"] * (ma * ma) * (ma * ma) * ha * (V - p["EA"]))
        I_syn = g_syn["PN"] * V - gE_syn["PN"]
        d[("PN", "v")] = (net.amp["PN"] * y_odor - I_ion - I_syn) / p["C"]
        a_n, b_n = k_rates(V)
        d[("PN", "n_k")] = PHI_22 * (a_n * (1.0 - n) - b_n * n)
        a_m, b_m, a_h, b_h = na_rates(V)
        d[("PN", "m_na")] = PHI_22 * (a_m * (1.0 - m) - b_m * m)
        d[("PN", "h_na")] = PHI_22 * (a_h * (1.0 - h) - b_h * h)
        m0, tm, h0, th = a_kinetics(V)
        d[("PN", "m_a")] = -(ma - m0) / tm
        d[("PN", "h_a")] = -(ha - h0) / th

        # --- LN
        V = y[("LN", "v")]
        n, mc, hc, mk, ca = (y[("LN", k)] for k in LN_VARS[1:])
        p = LN
        I_Ca = p["gCa"] * (mc * mc) * hc * (V - p["ECa"])
        I_ion = (p["gL"] * (V - p["EL"]) + p["gKL"] * (V - p["EKL"]) + p["gK"] * (n * n) * (n * n) * (V - p["EK"])
                 + I_Ca + p["gKCa"] * mk * (V - p["EKCa"]))
        I_syn = g_syn["LN"] * V - gE_syn["LN"]
        d[("LN", "v")] = (net.amp["LN"] * y_odor - I_ion - I_syn) / p["C"]
        a_n, b_n = k_rates(V)
        d[("LN", "n_k")] = PHI_22 * (a_n * (1.0 - n) - b_n * n)
        m0, tm, h0, th = ca_kinetics(V)
        d[("LN", "m_ca")] = -(mc - m0) / tm
        d[("LN", "h_ca")] = -(hc - h0) / th
        alpha_kca, beta_kca = 0.01 * ca, 0.02
        d[("LN", "m_kca")] = PHI_KCA * (alpha_kca * (1.0 - mk) - beta_kca * mk)
        d[("LN", "ca")] = -p["A_Ca"] * I_Ca - (ca - p["Ca0"]) / p["tau_Ca"]
        return d

    def step(self):
        """One RK4 step from t_k = k·dt; returns {pop: (neuron indices, spike times)}."""
        dt, y = self.dt, self.y
        t = self.k * dt
        k1 = self.deriv(t, y)
        k2 = self.deriv(t + 0.5 * dt, {key: y[key] + 0.5 * dt * k1[key] for key in y})
        k3 = self.deriv(t + 0.5 * dt, {key: y[key] + 0.5 * dt * k2[key] for key in y})
        k4 = self.deriv(t + dt, {key: y[key] + dt * k3[key] for key in y})
        new = {key: y[key] + dt / 6.0 * (k1[key] + 2.0 * k2[key] + 2.0 * k3[key] + k4[key]) for key in y}
        spikes = {}
        for pop in ("PN", "LN"):
            v0, v1 = y[(pop, "v")], new[(pop, "v")]
            idx = np.nonzero((v0 < THRESHOLD) & (v1 >= THRESHOLD))[0]
            ts = t + dt * (THRESHOLD - v0[idx]) / (v1[idx] - v0[idx])
            self.fire[pop][idx] = ts  # refractory period 0: every crossing is a spike
            spikes[pop] = (idx, ts)
        self.y = new
        self.k += 1
        return spikes

    def run(self, n_steps: int, record_every: int = 0):
        """Advance n_steps; returns spikes {pop: (ids, times)} and, if record_every, the voltage
        of every neuron after each record_every-th step {pop: [n_samples, n]}."""
        out = {pop: ([], []) for pop in ("PN", "LN")}
        trace = {pop: [] for pop in ("PN", "LN")}
        for _ in range(n_steps):
            spk = self.step()
            for pop, (i, t) in spk.items():
                out[pop][0].append(i)
                out[pop][1].append(t)
            if record_every and self.k % record_every == 0:
                for pop in trace:
                    trace[pop].append(self.y[(pop, "v")].copy())
        spikes = {pop: (np.concatenate(i).astype(np.int64), np.concatenate(t)) for pop, (i, t) in out.items()}
        return spikes, {pop: np.array(v) for pop, v in trace.items()}


def from_builder(net) -> ALNetwork:
    """Inputs (initial state, connectivity, stimulus amplitudes) of a built cluster_sim network."""
    counts = {name: pop.local.size for name, pop in net.populations.items()}
    init = {name: {k: np.asarray(v, float).copy() for k, v in pop.init.items()} for name, pop in net.populations.items()}
    couplings = []
    for proj in net.projections:
        W = np.zeros((counts[proj.target], counts[proj.source]))
        for j in range(counts[proj.target]):
            s = proj.src[proj.indptr[j]:proj.indptr[j + 1]]
            np.add.at(W[j], s, proj.weight[proj.indptr[j]:proj.indptr[j + 1]])
        kind = {"ach_pulse": "ach", "gaba_a_graded": "gaba"}[proj.spec.synapse]
        couplings.append(Coupling(kind, proj.source, proj.target, W, float(proj.spec.delay_ms) if kind == "ach" else 0.0))
    (stim,) = net.stimuli
    amp = {pop: np.asarray(stim.amplitude.get(pop, np.zeros(counts[pop])), float) for pop in ("PN", "LN")}
    odor = dict(start=stim.params["start_ms"], stop=stim.params["stop_ms"], rise=stim.params["rise_tau_ms"],
                decay=stim.params["decay_tau_ms"], release=stim.params.get("release_level", 0.9996))
    return ALNetwork(init, couplings, amp, odor, counts)
