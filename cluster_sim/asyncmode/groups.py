"""Neurons tied by graded (zero-delay, in-step) couplings integrated as one coupled system.

A group's state is one lane of the BDF kernel: the variables of every member neuron, then one
synaptic-gating variable per graded source (stored once per source, as BSP does). The group
shares one step and order; the error norm runs over all its variables; Newton uses the exact
diagonal of the coupled Jacobian (each variable's own a in dx/dt = a·x + b: the membrane term
includes the synaptic conductances, the gating term α·T(V_pre) + β). Spikes are located per
member on the step's interpolant. Building block for the asynchronous engine (issue 9 §2); not
yet driven by ``AsyncEngine``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from cluster_sim.asyncmode import bdf
from cluster_sim.models.base import Drive, NeuronModel
from cluster_sim.models.synapses import GradedKinetic


@dataclass(frozen=True)
class Member:
    model: NeuronModel
    params: Mapping[str, float]
    i_ext: float = 0.0  # constant injected current (model units)


@dataclass(frozen=True)
class GradedLink:
    """Σ weight·o(src) onto ``tgt`` with reversal E; o obeys the synapse's kinetics driven by
    the transmitter of V(src)."""

    src: int
    tgt: int
    weight: float
    synapse: GradedKinetic
    params: Mapping[str, float]


class GroupKernel(bdf.BdfKernel):
    """BDF over one coupled group per lane (all lanes share the group's structure)."""

    def __init__(self, members: Sequence[Member], links: Sequence[GradedLink], *, jit_compile: bool = True) -> None:
        for ln in links:
            if ln.synapse.signal != "v" or ln.synapse.variables != ("o",):
                raise ValueError(f"only voltage-graded one-state synapses couple in-step here, not {ln.synapse.name!r}")
        super().__init__(members[0].model, [], [], jit_compile=jit_compile)
        self.members, self.links = list(members), list(links)
        self.offsets = np.cumsum([0] + [len(m.model.variables) for m in members])
        self.sources = sorted({(ln.src, ln.synapse.name) for ln in links})
        self.o_col = {key: int(self.offsets[-1]) + i for i, key in enumerate(self.sources)}
        self.nv = int(self.offsets[-1]) + len(self.sources)
        self.v_cols = [int(o) for o in self.offsets[:-1]]

    def rhs(self, t: Any, y: Any, params: Any, amps: Any) -> tuple[Any, Any]:
        tf, ops = self.tf, self.ops
        shape = tf.shape(t)
        cols: list[Any] = [None] * self.nv
        jac: list[Any] = [None] * self.nv
        g = [0.0] * len(self.members)
        gE = [0.0] * len(self.members)
        for ln in self.links:
            o = y[:, self.o_col[(ln.src, ln.synapse.name)]]
            w = ln.weight * ln.synapse.open_fraction(ops, ln.params, {"o": o})
            g[ln.tgt] = g[ln.tgt] + w
            gE[ln.tgt] = gE[ln.tgt] + w * ln.params["E_mV"]
        done = set()
        for ln in self.links:  # gating of each source, once
            key = (ln.src, ln.synapse.name)
            if key in done:
                continue
            done.add(key)
            c = self.o_col[key]
            T = ln.synapse.transmitter(ops, ln.params, y[:, self.v_cols[ln.src]], t, 0.0)
            a, b = ln.synapse.terms(ops, ln.params, {"o": y[:, c]}, T)["o"]
            a = tf.broadcast_to(tf.cast(a, tf.float64), shape)
            cols[c], jac[c] = a * y[:, c] + tf.broadcast_to(tf.cast(b, tf.float64), shape), a
        for i, m in enumerate(self.members):
            off = int(self.offsets[i])
            yd = {v: y[:, off + j] for j, v in enumerate(m.model.variables)}
            terms = m.model.terms(ops, dict(m.params), yd, Drive(m.i_ext, g[i], gE[i]))
            for j, v in enumerate(m.model.variables):
                a, b = terms[v]
                a = tf.broadcast_to(tf.cast(a, tf.float64), shape)
                cols[off + j], jac[off + j] = a * yd[v] + tf.broadcast_to(tf.cast(b, tf.float64), shape), a
        return tf.stack(cols, axis=1), tf.stack(jac, axis=1)

    def initial(self, y_members: Sequence[Mapping[str, float]]) -> np.ndarray:
        """One lane's y0: the members' values, gating 0 (as PSST)."""
        y = np.zeros(self.nv)
        for i, (m, vals) in enumerate(zip(self.members, y_members)):
            y[self.offsets[i]:self.offsets[i + 1]] = [vals[v] for v in m.model.variables]
        return y

    def run(self, y0: np.ndarray, t_end: float, *, rtol: float, atol: float, max_iter: int = 256) -> dict[str, Any]:
        """Integrate one group from t = 0 to ``t_end``: spike times per member and counters."""
        st = bdf.new_state(y0[None, :], 0.0)
        M = len(self.members)
        st["fire_t"] = np.full((1, M), -1e9)
        thresh = np.array([[m.model.threshold_mV(m.params) for m in self.members]])
        refr = np.array([[m.model.refractory_ms(m.params) for m in self.members]])
        spikes: list[list[float]] = [[] for _ in range(M)]
        totals = {k: 0 for k in bdf.COUNTER_KEYS}
        while st["t"][0] < t_end:
            st, spk, cnt, _ = self.advance(st, np.array([t_end]), np.full((1, 1), np.inf), np.zeros((1, 1, self.nv)),
                                           np.zeros((1, 0)), np.zeros((1, 0)), thresh, refr, max_iter, rtol, atol)
            st["ev_ptr"][:] = 0
            for k, v in cnt.items():
                totals[k] += int(v.sum())
            for i in np.flatnonzero(~np.isnan(spk[0])):
                spikes[i].append(float(spk[0, i]))
            if st["failed"].any():
                raise RuntimeError(f"group step size collapsed at t = {st['t'][0]}")
        return {"spikes": [np.array(s) for s in spikes], "y": st["D"][0][0], **totals}
