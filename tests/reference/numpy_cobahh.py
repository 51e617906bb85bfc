"""Independent NumPy implementation of the COBAHH benchmark network (Brette et al. 2007,
benchmark 3; Brian2 examples/COBAHH.py), typed from shared/reference/cobahh.md.

C dv/dt = gl(El-v) + ge(Ee-v) + gi(Ei-v) - g_na m³h (v-ENa) - g_kd n⁴ (v-EK)
dx/dt = α_x (1-x) - β_x x  (x = m, h, n; Traub–Miles rates in v - VT)
dge/dt = -ge/τe, dgi/dt = -gi/τi; a spike adds we to ge (wi to gi) of its targets.

Integration: exponential Euler for conditionally linear equations (Brian2
``exponential_euler``): write dx/dt = A x + B with A, B taken from the state at the start of
the step (for every variable), then x ← x + (A x + B)·dt·(e^{A dt} - 1)/(A dt).
Spikes: v crosses -20 mV upwards within a step, time interpolated linearly, accepted only
3 ms (refractory) after the previous accepted spike. Delivery: a spike in step k through a
projection with a delay of D steps is added to the target's ge/gi at the start of step k+1+D.

Units: pF, nS, mV, ms.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AREA_UM2 = 20000.0
CM = 1.0 * AREA_UM2 * 1e-8 * 1e6      # 1 µF/cm² × 20000 µm² = 200 pF
GL = 5e-5 * AREA_UM2 * 1e-8 * 1e9     # 5e-5 S/cm² × area = 10 nS
G_NA = 100e-3 * AREA_UM2 * 1e-8 * 1e9  # 100 mS/cm² × area = 20000 nS
G_KD = 30e-3 * AREA_UM2 * 1e-8 * 1e9   # 30 mS/cm² × area = 6000 nS
EL, EK, ENA, VT = -60.0, -90.0, 50.0, -63.0
EE, EI = 0.0, -80.0
TAU_E, TAU_I = 5.0, 10.0
THRESHOLD, REFRACTORY = -20.0, 3.0


def _xm1(x):
    """x / (exp(x) - 1), 1 at x = 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = x / np.expm1(x)
    return np.where(x == 0.0, 1.0, r)


def rates(v):
    u = v - VT
    a_m = 0.32 * 4.0 * _xm1((13.0 - u) / 4.0)   # 0.32(13-u)/(exp((13-u)/4)-1)
    b_m = 0.28 * 5.0 * _xm1((u - 40.0) / 5.0)   # 0.28(u-40)/(exp((u-40)/5)-1)
    a_h = 0.128 * np.exp((17.0 - u) / 18.0)
    b_h = 4.0 / (1.0 + np.exp((40.0 - u) / 5.0))
    a_n = 0.032 * 5.0 * _xm1((15.0 - u) / 5.0)  # 0.032(15-u)/(exp((15-u)/5)-1)
    b_n = 0.5 * np.exp((10.0 - u) / 40.0)
    return a_m, b_m, a_h, b_h, a_n, b_n


def phi(z):
    """(e^z - 1)/z, 1 at z = 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.expm1(z) / z
    return np.where(z == 0.0, 1.0, r)


@dataclass
class Route:
    source: str
    target: str
    var: str  # "ge" or "gi"
    W: np.ndarray  # [n_target, n_source], summed weights (nS)
    delay_steps: int


class CobaHHReference:
    def __init__(self, init: dict, routes: list, dt: float = 0.1, arrival_offset: int = 1) -> None:
        """``arrival_offset``: a spike in step k arrives at step k + arrival_offset + delay (1 is
        the convention under test; other values exist for negative controls)."""
        self.dt, self.arrival_offset = dt, arrival_offset
        self.pops = list(init)
        self.y = {p: {k: np.array(init[p][k], np.float64) for k in ("v", "m", "h", "n", "ge", "gi")} for p in init}
        self.last = {p: np.full(self.y[p]["v"].size, -1e9) for p in init}
        self.routes = routes
        self.pending: dict[int, dict] = {}  # step -> {(pop, var): increment array}
        self.k = 0

    def _schedule(self, spikes: dict) -> None:
        for r in self.routes:
            idx = spikes[r.source]
            if idx.size == 0:
                continue
            inc = r.W[:, idx].sum(axis=1)
            slot = self.pending.setdefault(self.k + self.arrival_offset + r.delay_steps, {})
            key = (r.target, r.var)
            slot[key] = slot.get(key, 0.0) + inc

    def step(self) -> dict:
        dt, t = self.dt, self.k * self.dt
        for (pop, var), inc in self.pending.pop(self.k, {}).items():
            self.y[pop][var] = self.y[pop][var] + inc
        spikes = {}
        for p in self.pops:
            s = self.y[p]
            v, m, h, n, ge, gi = (s[k] for k in ("v", "m", "h", "n", "ge", "gi"))
            g_na = G_NA * m ** 3 * h
            g_k = G_KD * n ** 4
            A = {"v": -(GL + ge + gi + g_na + g_k) / CM,
                 "ge": np.full_like(v, -1.0 / TAU_E), "gi": np.full_like(v, -1.0 / TAU_I)}
            B = {"v": (GL * EL + ge * EE + gi * EI + g_na * ENA + g_k * EK) / CM,
                 "ge": 0.0, "gi": 0.0}
            a_m, b_m, a_h, b_h, a_n, b_n = rates(v)
            for x, a, b in (("m", a_m, b_m), ("h", a_h, b_h), ("n", a_n, b_n)):
                A[x], B[x] = -(a + b), a
            new = {x: s[x] + (A[x] * s[x] + B[x]) * dt * phi(A[x] * dt) for x in s}
            v0, v1 = v, new["v"]
            cross = np.nonzero((v0 < THRESHOLD) & (v1 >= THRESHOLD))[0]
            ts = t + dt * (THRESHOLD - v0[cross]) / (v1[cross] - v0[cross])
            ok = ts - self.last[p][cross] >= REFRACTORY
            idx, ts = cross[ok], ts[ok]
            self.last[p][idx] = ts
            spikes[p] = (idx, ts)
            self.y[p] = new
        self._schedule({p: spikes[p][0] for p in self.pops})
        self.k += 1
        return spikes

    def run(self, n_steps: int, record: tuple[str, np.ndarray] | None = None):
        """{pop: (neuron ids, spike times)} in the order they occurred; with ``record`` =
        (population, neuron indices) also the voltage of those neurons after every step."""
        out = {p: ([], []) for p in self.pops}
        trace = []
        for _ in range(n_steps):
            for p, (i, t) in self.step().items():
                out[p][0].append(i)
                out[p][1].append(t)
            if record is not None:
                trace.append(self.y[record[0]]["v"][record[1]].copy())
        spikes = {p: (np.concatenate(i).astype(np.int64), np.concatenate(t)) for p, (i, t) in out.items()}
        return (spikes, np.array(trace)) if record is not None else spikes


def from_builder(net) -> tuple[dict, list]:
    """(initial state, routes) of a built cluster_sim network (inputs only)."""
    init = {name: {k: np.asarray(v, float).copy() for k, v in pop.init.items()} for name, pop in net.populations.items()}
    routes = []
    for proj in net.projections:
        n_t, n_s = net.populations[proj.target].local.size, net.populations[proj.source].local.size
        W = np.zeros((n_t, n_s))
        tgt = np.repeat(np.arange(n_t), np.diff(proj.indptr))
        np.add.at(W, (tgt, proj.src), proj.weight)
        var = {"exp_cond_exc": "ge", "exp_cond_inh": "gi"}[proj.spec.synapse]
        routes.append(Route(proj.source, proj.target, var, W, int(proj.delay_steps)))
    return init, routes
