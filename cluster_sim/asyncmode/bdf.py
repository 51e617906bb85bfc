"""Batched variable-order (1–5), variable-step BDF with per-neuron time, step, order and events.

One compiled ``tf.function`` advances a batch of neurons of one model. Every neuron carries its
own t, step h, order q and history (a difference array, as in the quasi-constant-step NDF/BDF
family of Shampine & Reichelt 1997 that CVODE and scipy's ``BDF`` also belong to), so neurons
take entirely different step sequences inside one vectorised loop. Masking keeps the arithmetic
per neuron identical however the batch is composed (bitwise: no cross-neuron reduction).

* Implicit: each step solves y = y_pred + d with a Newton iteration whose Jacobian is the exact
  diagonal of the conditionally linear model (dx/dt = a·x + b, so ∂f_x/∂x = a) — NEURON's and
  neurox's "diagonal" choice: no factorisation, one RHS evaluation per iteration.
* Error-controlled: local error from the BDF error constant against atol + rtol·|y| (RMS over
  the neuron's variables); rejected steps shrink h; the order is raised or lowered after q+1
  equal steps to the one that promises the longest next step.
* Events: a neuron stops exactly at each of its input events (a padded, time-sorted list per
  neuron, already summed per time on the host), adds the jump and restarts at order 1 with a
  fresh initial step (the history is invalid across a jump).
* Samples: recorded values at given times come from the dense output of the accepted step that
  covers each time (its interpolating polynomial), never from extra steps: the sample times
  are inputs, and filled slots (NaN otherwise) an output.
* Spikes: an upward crossing of the threshold within an accepted step is located by bisection
  on the step's interpolating polynomial (dense output), not at the step end. A call holds up
  to ``spike_slots`` spikes per neuron; a neuron whose slots are full pauses for the rest of it.

Layout: inside a call the lanes (neurons) are the minor axis and the difference array is a list
of rows [nv, B], so that the per-lane bookkeeping vectorises across neurons and a row's update
leaves the other rows' buffers alone; the host interface keeps [rows, B, nv]. Step-size factors
are computed in float32 (see ``_attempt``): XLA:CPU vectorises float32 log/exp, not float64 pow.

The kernel knows nothing of MPI, files or the schedule: stop times and events are inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cluster_sim.asyncmode import history
from cluster_sim.asyncmode.history import MAX_ORDER, ROWS
from cluster_sim.models.base import Drive, NeuronModel

NEWTON_MAXITER = 4
MIN_FACTOR, MAX_FACTOR = 0.2, 10.0
H_MIN_MS = 1e-12
FEW_LANES = 32  # lanes of the gathered batch for work only a few lanes need (spike times, samples)
# Lanes at the end of every batch that never hold a neuron: XLA:CPU's fusion emitters compute the
# last vector of a loop on another path (exp() a few ulp off), so no neuron may sit there, or its
# arithmetic would depend on its position in the batch (tests/test_async.py).
GUARD_LANES = 8

STATE_KEYS = ("t", "D", "order", "h", "n_equal", "restart", "fire_t", "ev_ptr", "failed")
# iters: loop iterations in which the neuron was live (its useful share of the batch's work)
COUNTER_KEYS = ("steps", "rejected", "rhs", "restarts", "newton_fail", "iters")


@dataclass(frozen=True)
class Stimulus:
    """An injected current amp·shape(t) evaluated at the neuron's own time."""

    shape: Callable[[Any, Mapping[str, float], Any], Any]
    params: Mapping[str, float]


class BdfKernel:
    """Compiled per-neuron BDF for one neuron model; parameters are per-neuron columns so that
    populations of the same model share one kernel."""

    def __init__(self, model: NeuronModel, param_names: Sequence[str], stimuli: Sequence[Stimulus], *,
                 jit_compile: bool = True) -> None:
        import tensorflow as tf

        from cluster_sim.models._ops import tf_ops

        self.tf, self.model = tf, model
        self.ops = tf_ops("float64")
        self.param_names = list(param_names)
        self.stimuli = list(stimuli)
        self.nv = len(model.variables)
        self.v_cols = [0]  # columns holding membrane potentials (a coupled group has several)
        # Voltage columns whose spikes change the right-hand side at once (zero-delay transmitter
        # pulses inside a coupled group): the step is cut back to the spike time (see _attempt).
        self.cut_at_spike: Any = None
        f64 = tf.float64
        self._kappa = tf.constant(history.KAPPA, f64)
        self._gamma = tf.constant(history.GAMMA, f64)
        self._alpha = tf.constant(history.ALPHA, f64)
        self._err = tf.constant(history.ERROR_CONST, f64)
        self.jit_compile = jit_compile
        self._fns: dict[tuple[int, ...], Any] = {}  # a traced function per stage ladder
        self._concrete: dict[tuple, Any] = {}
        self.last_trips = np.zeros(1, np.int32)

    # -- the model --------------------------------------------------------------------------

    def rhs(self, t: Any, y: Any, params: Any, amps: Any) -> tuple[Any, Any]:
        """(f, ∂f/∂y diagonal), each [nv, B], at per-neuron times t [B]; y [nv, B], params [P, B],
        amps [K, B] (lanes minor, see ``_advance``)."""
        tf, ops = self.tf, self.ops
        p = {name: params[i] for i, name in enumerate(self.param_names)}
        i_ext = 0.0
        for k, stim in enumerate(self.stimuli):
            i_ext = i_ext + amps[k] * stim.shape(ops, stim.params, t)
        yd = {v: y[j] for j, v in enumerate(self.model.variables)}
        terms = self.model.terms(ops, p, yd, Drive(i_ext, 0.0, 0.0))
        shape = tf.shape(t)
        f, jac = [], []
        for j, v in enumerate(self.model.variables):
            a, b = terms[v]
            a = tf.broadcast_to(tf.cast(a, tf.float64), shape)
            b = tf.broadcast_to(tf.cast(b, tf.float64), shape)
            f.append(a * y[j] + b)
            jac.append(a)
        return tf.stack(f, axis=0), tf.stack(jac, axis=0)

    # -- helpers on the difference array D: a list of ROWS rows [nv, B] ----------------------
    # Rows are separate tensors so that an update of some rows (an input jump touches row 0, a
    # restart rows 1..) leaves the others' buffers alone and per-row work fuses elementwise.

    def _rms(self, x: Any) -> Any:
        return self.tf.sqrt(self.tf.reduce_mean(x * x, axis=0))

    def _change_D(self, D: Any, q: Any, factor: Any) -> Any:
        """As ``history.rescale``, computed only when some lane of the batch has a factor other than 1."""
        tf = self.tf
        return tf.cond(tf.reduce_any(factor != 1.0), lambda: history.rescale(tf, D, q, factor), lambda: D)

    # -- one call ---------------------------------------------------------------------------

    def _advance(self, st: dict[str, Any], t_stop: Any, ev_t: Any, ev_w: Any, smp_t: Any, params: Any, amps: Any,
                 thresh: Any, refr: Any, max_iter: Any, tol: Any, spike0: Any, stages: tuple[int, ...] = ()
                 ) -> tuple[dict[str, Any], Any, dict[str, Any], Any, Any]:
        tf = self.tf
        # Tolerances are inputs, not constants, so that one compilation serves every tolerance.
        self.rtol, self.atol, self.newton_tol = tol[0], tol[1], tol[2]
        min_live = tol[3]  # stop once this few lanes are live: the host goes on with a smaller batch
        f64, i32 = tf.float64, tf.int32
        # Inside the call the lanes are the minor axis (D [R, nv, B], y [nv, B], params [P, B]):
        # every per-lane operation then runs over contiguous rows of B, vectorised across
        # neurons, instead of over rows of nv (6 for COBAHH) with strided column access.
        st = dict(st, D=tf.unstack(tf.transpose(st["D"], [0, 2, 1]), axis=0))
        B = tf.shape(t_stop)[0]
        zeros_i = tf.zeros([B], i32)
        counters = {k: zeros_i for k in COUNTER_KEYS}
        # spike0 [B, K, M]: K spike slots per lane, one time per voltage column (NaN: none)
        smp_v = tf.fill([B, tf.shape(smp_t)[1], self.nv], tf.constant(np.nan, f64))
        inputs = {"t_stop": t_stop, "ev_t": ev_t, "ev_w": ev_w, "smp_t": smp_t, "params": tf.transpose(params),
                  "amps": tf.transpose(amps), "thresh": thresh, "refr": refr}
        carry = (st, counters, spike0, smp_v)
        # Stages: the batch runs until at most stages[0] lanes are live, which then continue,
        # gathered (live lanes first, inert ones as the guard lanes at the end), in a batch of
        # stages[0] + GUARD_LANES, and so on; the last stage runs until none is live (or until
        # min_live are). Stragglers thus finish in one call, on a small batch, with no host
        # round trip; each lane's arithmetic is elementwise, so its results do not depend on
        # the stage it runs in.
        trips = []
        for i, size in enumerate((None,) + tuple(stages)):
            last = i == len(stages)
            nxt = None if last else tf.cast(stages[i], f64)
            if size is None:
                n_it, carry = self._loop(inputs, carry, max_iter, min_live if last else nxt, at_least_once=last)
            else:
                k = size + GUARD_LANES
                idx, rank = history.live_first(tf, self._live(inputs, carry[0], carry[2]), k)
                sub_in = {n: tf.gather(v, idx, axis=1 if n in ("params", "amps") else 0) for n, v in inputs.items()}
                sub = self._carry_map(lambda ax, x: tf.gather(x, idx, axis=ax), carry)
                n_it, sub = self._loop(sub_in, sub, max_iter, min_live if last else nxt, at_least_once=last)
                back = tf.minimum(rank, k - 1)  # each lane's place in the stage's batch
                in_sub = rank < k
                carry = self._carry_map(lambda ax, x, y: self._put_back(x, y, back, in_sub, ax), carry, sub)
            trips.append(n_it)
        st, counters, spike, smp_v = carry
        return (dict(st, D=tf.transpose(tf.stack(st["D"], axis=0), [0, 2, 1])), spike, counters, smp_v,
                tf.stack(trips))

    def _carry_map(self, fn: Callable[..., Any], *carries: tuple[Any, ...]) -> tuple[Any, ...]:
        """``fn(lane_axis, *tensors)`` over the loop state (st, counters, spikes, samples) of
        one or more batches: the lanes are axis 1 of the history rows, axis 0 elsewhere."""
        sts, cs, spks, svs = zip(*carries)
        st = {k: ([fn(1, *rows) for rows in zip(*(s_[k] for s_ in sts))] if k == "D" else fn(0, *(s_[k] for s_ in sts)))
              for k in sts[0]}
        c = {k: fn(0, *(c_[k] for c_ in cs)) for k in cs[0]}
        return st, c, fn(0, *spks), fn(0, *svs)

    def _put_back(self, x: Any, y: Any, back: Any, in_sub: Any, axis: int) -> Any:
        """x with the lanes that went into a stage's batch taken from it (y at ``back``): a
        gather and a select (XLA:CPU fails to compile a scatter fused here)."""
        tf = self.tf
        got = tf.gather(y, back, axis=axis)
        shape = [1] * len(x.shape)
        shape[axis] = -1
        return tf.where(tf.reshape(in_sub, shape), got, x)

    def _next_event(self, inputs: dict[str, Any], ptr: Any) -> tuple[Any, Any]:
        tf = self.tf
        ev_t = inputs["ev_t"]
        n_ev = tf.shape(ev_t)[1]
        idx = tf.minimum(ptr, n_ev - 1)
        te = tf.gather(ev_t, idx[:, None], batch_dims=1)[:, 0]
        return tf.where(ptr < n_ev, te, tf.constant(np.inf, tf.float64)), idx

    def _live(self, inputs: dict[str, Any], s: dict[str, Any], spk: Any) -> Any:
        tf = self.tf
        te, _ = self._next_event(inputs, s["ev_ptr"])
        room = ~tf.reduce_all(tf.reduce_any(~tf.math.is_nan(spk), axis=2), axis=1)  # a free slot left
        return ((s["t"] < inputs["t_stop"]) | (te <= s["t"])) & room & ~s["failed"]

    def _loop(self, inputs: dict[str, Any], carry: tuple[Any, ...], max_iter: Any, min_live: Any, *,
              at_least_once: bool) -> tuple[Any, tuple[Any, ...]]:
        """Iterations on one batch while more than ``min_live`` lanes are live (at most
        ``max_iter``; with ``at_least_once``, the first whatever the count). Returns the trips."""
        tf = self.tf
        f64, i32 = tf.float64, tf.int32
        ev_w, params, amps = inputs["ev_w"], inputs["params"], inputs["amps"]
        n_slots = int(carry[2].shape[1])  # static: the loop keeps the spike buffer's shape

        def body(it: Any, s: dict[str, Any], c: dict[str, Any], spk: Any, sv: Any) -> Any:
            s, c = dict(s), dict(c)
            act = self._live(inputs, s, spk)
            # 1. Input events due at the neuron's time: add the jump, restart the history.
            te, idx = self._next_event(inputs, s["ev_ptr"])
            due = act & (te <= s["t"])
            w = tf.transpose(tf.gather(ev_w, idx[:, None], batch_dims=1)[:, 0, :])
            s["D"] = [s["D"][0] + tf.where(due[None, :], w, tf.zeros_like(w))] + list(s["D"][1:])
            s["ev_ptr"] = s["ev_ptr"] + tf.cast(due, i32)
            s["restart"] = s["restart"] | due
            te, _ = self._next_event(inputs, s["ev_ptr"])
            # 2. Restart (start, or after a jump): order 1, initial step from Hairer's estimate;
            # only in iterations where some lane restarts (most iterations have none). Measured:
            # this cond, though its other branch copies the state, beats computing the restart's
            # outputs in a cond and selecting them into the rows outside it.
            need = act & s["restart"]
            s, c = tf.cond(tf.reduce_any(need), lambda: self._restart(s, c, need, params, amps), lambda: (s, c))
            # 3. One step attempt towards min(stop, next event).
            target = tf.minimum(inputs["t_stop"], te)
            go = act & (s["t"] < target)
            s, c, spk2, sv = self._attempt(s, c, go, target, params, amps, inputs["thresh"], inputs["refr"],
                                           inputs["smp_t"], sv)
            # A step's spikes (of any voltage column) go to the lane's first free slot.
            got = tf.reduce_any(~tf.math.is_nan(spk2), axis=1)
            used = tf.reduce_sum(tf.cast(tf.reduce_any(~tf.math.is_nan(spk), axis=2), i32), axis=1)
            put = tf.equal(tf.range(n_slots)[None, :], used[:, None]) & got[:, None]
            spk = tf.where(put[:, :, None], spk2[:, None, :], spk)
            c["iters"] = c["iters"] + tf.cast(act, i32)
            return it + 1, s, c, spk, sv

        def cond(it: Any, s: dict[str, Any], c: dict[str, Any], spk: Any, sv: Any) -> Any:
            n_live = tf.reduce_sum(tf.cast(self._live(inputs, s, spk), f64))
            more = n_live > min_live
            return (it < max_iter) & (n_live > 0.0) & (((it == 0) | more) if at_least_once else more)

        n_it, st, counters, spike, smp_v = tf.while_loop(cond, body, (tf.constant(0, i32),) + tuple(carry))
        return n_it, (st, counters, spike, smp_v)

    def _initial_step(self, s: dict[str, Any], params: Any, amps: Any) -> tuple[Any, Any]:
        """Hairer's initial step h [B] and the first difference h·f(y0) [nv, B] for every lane."""
        tf = self.tf
        y0 = s["D"][0]
        f0, _ = self.rhs(s["t"], y0, params, amps)
        scale = self.atol + self.rtol * tf.abs(y0)
        d0, d1 = self._rms(y0 / scale), self._rms(f0 / scale)
        h0 = tf.where((d0 < 1e-5) | (d1 < 1e-5), tf.fill(tf.shape(d0), tf.constant(1e-6, tf.float64)), 0.01 * d0 / tf.maximum(d1, 1e-300))
        f1, _ = self.rhs(s["t"] + h0, y0 + h0[None, :] * f0, params, amps)
        d2 = self._rms((f1 - f0) / scale) / h0
        h1 = tf.where(tf.maximum(d1, d2) <= 1e-15, tf.maximum(h0 * 1e-3, tf.constant(1e-6, tf.float64)),
                      tf.sqrt(0.01 / tf.maximum(tf.maximum(d1, d2), 1e-300)))
        h = tf.maximum(tf.minimum(100.0 * h0, h1), H_MIN_MS * 10.0)
        return h, h[None, :] * f0

    def _restart(self, s: dict[str, Any], c: dict[str, Any], mask: Any, params: Any, amps: Any) -> Any:
        """Lanes of ``mask`` restart at order 1 with Hairer's initial step."""
        tf = self.tf
        s, c = dict(s), dict(c)
        h, D1 = self._initial_step(s, params, amps)
        m2 = mask[None, :]
        s["D"] = [s["D"][0], tf.where(m2, D1, s["D"][1])] + [tf.where(m2, tf.zeros_like(r), r) for r in s["D"][2:]]
        s["h"] = tf.where(mask, h, s["h"])
        s["order"] = tf.where(mask, tf.ones_like(s["order"]), s["order"])
        s["n_equal"] = tf.where(mask, tf.zeros_like(s["n_equal"]), s["n_equal"])
        s["restart"] = s["restart"] & ~mask
        c["rhs"] = c["rhs"] + 2 * tf.cast(mask, tf.int32)
        c["restarts"] = c["restarts"] + tf.cast(mask, tf.int32)
        return s, c

    def _attempt(self, s: dict[str, Any], c: dict[str, Any], go: Any, target: Any, params: Any, amps: Any,
                 thresh: Any, refr: Any, smp_t: Any, smp_v: Any) -> Any:
        tf = self.tf
        f64, i32 = tf.float64, tf.int32
        s, c = dict(s), dict(c)
        t, D, q, h = s["t"], s["D"], s["order"], s["h"]
        h_orig = h
        # Truncate the step to land exactly on the target (rescaling the history, no restart).
        trunc = go & (t + h > target)
        h_new = tf.where(trunc, target - t, h)
        D = self._change_D(D, q, tf.where(trunc, h_new / h, tf.ones_like(h)))
        n_equal = tf.where(trunc, tf.zeros_like(s["n_equal"]), s["n_equal"])
        h = h_new
        t_new = tf.where(trunc, target, t + h)
        y_pred, psi = D[0], tf.zeros_like(D[0])
        for i in range(1, MAX_ORDER + 1):
            used = (i <= q)[None, :]
            y_pred = y_pred + tf.where(used, D[i], tf.zeros_like(D[i]))
            psi = psi + tf.where(used, history.GAMMA[i] * D[i], tf.zeros_like(D[i]))
        scale = self.atol + self.rtol * tf.abs(y_pred)
        alpha_q = tf.gather(self._alpha, q)
        psi = psi / alpha_q[None, :]
        cc = h / alpha_q

        # Newton iteration with the exact diagonal Jacobian at the prediction.
        def n_body(k: Any, y: Any, d: Any, jac: Any, old: Any, conv: Any, fail: Any, iters: Any, rhs_n: Any) -> Any:
            running = go & ~conv & ~fail
            f, j_now = self.rhs(t_new, y, params, amps)
            jac = tf.where((k == 0), j_now, jac)
            dy = (cc[None, :] * f - psi - d) / (1.0 - cc[None, :] * jac)
            dy_norm = self._rms(dy / scale)
            finite = tf.reduce_all(tf.math.is_finite(dy), axis=0)
            rate = dy_norm / tf.where(old > 0, old, tf.ones_like(old))
            has_rate = old > 0
            kf = tf.cast(k, f64)
            # rate^(iterations left) by products (pow and float64 log are scalar libm calls on
            # XLA:CPU); only k >= 1 has a rate, so at most NEWTON_MAXITER - 1 factors.
            left = NEWTON_MAXITER - k
            r_left = rate
            for m in range(2, NEWTON_MAXITER):
                r_left = tf.where(left >= m, r_left * rate, r_left)
            diverge = has_rate & ((rate >= 1.0) | (r_left / (1.0 - tf.minimum(rate, 0.999999)) * dy_norm > self.newton_tol))
            bad = running & (~finite | diverge)
            upd = running & ~bad
            y = tf.where(upd[None, :], y + dy, y)
            d = tf.where(upd[None, :], d + dy, d)
            ok = upd & ((dy_norm == 0.0) | (has_rate & (rate / (1.0 - tf.minimum(rate, 0.999999)) * dy_norm < self.newton_tol)))
            iters = iters + tf.cast(running, i32)
            rhs_n = rhs_n + tf.cast(running, i32)
            fail = fail | bad | (upd & ~ok & (k == NEWTON_MAXITER - 1))
            return k + 1, y, d, jac, tf.where(upd, dy_norm, old), conv | ok, fail, iters, rhs_n

        def n_cond(k: Any, y: Any, d: Any, jac: Any, old: Any, conv: Any, fail: Any, iters: Any, rhs_n: Any) -> Any:
            return (k < NEWTON_MAXITER) & tf.reduce_any(go & ~conv & ~fail)

        zero_b = tf.zeros_like(h)
        _, y_new, d, _, _, conv, _, iters, rhs_n = tf.while_loop(
            n_cond, n_body, (tf.constant(0, i32), y_pred, tf.zeros_like(y_pred), tf.zeros_like(y_pred), zero_b,
                             tf.zeros_like(go), tf.zeros_like(go), tf.zeros_like(q), tf.zeros_like(q)))
        c["rhs"] = c["rhs"] + rhs_n
        newton_bad = go & ~conv
        c["newton_fail"] = c["newton_fail"] + tf.cast(newton_bad, i32)

        safety = 0.9 * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + tf.cast(iters, f64))
        scale_new = self.atol + self.rtol * tf.abs(y_new)
        err_q = tf.gather(self._err, q)
        err_norm = self._rms(err_q[None, :] * d / scale_new)
        too_big = go & conv & (err_norm > 1.0)
        accept = go & conv & ~too_big
        qf64 = tf.cast(q, f64)
        inf_b = tf.fill(tf.shape(h), tf.constant(np.inf, f64))

        qf32 = tf.cast(q, tf.float32)

        def step_factor(norm: Any, k: float) -> Any:
            """norm^(-1/(q+k)), the step factor an error norm allows at order q+k-1 (inf at 0).
            In float32: XLA:CPU vectorises float32 log and exp but calls libm per element for
            float64 log and pow, and a step-size heuristic (scaled by a safety factor, clipped to
            [MIN_FACTOR, MAX_FACTOR]) needs no more than float32's 1e-7 (still deterministic)."""
            n32 = tf.cast(tf.clip_by_value(norm, 1e-30, 1e30), tf.float32)
            f = tf.cast(tf.exp(tf.math.log(n32) * (-1.0 / (qf32 + k))), f64)
            return tf.where(norm > 0, f, inf_b)

        f_same = step_factor(err_norm, 1.0)
        # Used only where the step is rejected (err_norm > 1, or Newton failed: 0.5).
        shrink = tf.where(newton_bad, tf.fill(tf.shape(h), tf.constant(0.5, f64)),
                          tf.maximum(safety * f_same, tf.constant(MIN_FACTOR, f64)))
        reject = newton_bad | too_big
        c["rejected"] = c["rejected"] + tf.cast(reject, i32)

        # Accepted: update the differences (D^{j+1} y_n = D^j y_n - D^j y_{n-1}).
        Dq1 = history.row(tf, D, q + 1)
        Dacc = [tf.where((q + 2 == i)[None, :], d - Dq1, tf.where((q + 1 == i)[None, :], d, D[i])) for i in range(ROWS)]
        for i in reversed(range(MAX_ORDER + 1)):
            Dacc[i] = tf.where((i <= q)[None, :], Dacc[i] + Dacc[i + 1], Dacc[i])
        # Spike: upward threshold crossing inside the step, located on the interpolant.
        th = thresh if thresh.shape.rank == 2 else thresh[:, None]  # [B, M] for M voltage columns
        rf = refr if refr.shape.rank == 2 else refr[:, None]
        fire = s["fire_t"] if s["fire_t"].shape.rank == 2 else s["fire_t"][:, None]
        v_old, v_new = (tf.transpose(tf.gather(x[0], self.v_cols, axis=0)) for x in (D, Dacc))
        cross = accept[:, None] & (v_old < th) & (v_new >= th)
        no_spk = tf.broadcast_to(t_new[:, None], tf.shape(th))
        t_spk = self._on_lanes(tf.reduce_any(cross, axis=1), lambda D_, q_, t_, tn_, h_, th_: history.root(tf, D_, q_, t_, tn_, h_, th_, self.v_cols),
                               no_spk, (Dacc, 1), (q, 0), (t, 0), (t_new, 0), (h, 0), (th, 0))
        spiked = cross & (t_spk - fire >= rf)
        any_cut = None
        if self.cut_at_spike is not None:
            # The earliest spike that starts a pulse ends the step there: later crossings of the
            # same step are undone (found again after the pulse is applied).
            cut_sp = spiked & self.cut_at_spike[None, :]
            any_cut = tf.reduce_any(cut_sp, axis=1)
            t_cut = tf.reduce_min(tf.where(cut_sp, t_spk, tf.fill(tf.shape(t_spk), tf.constant(np.inf, f64))), axis=1)
            spiked = spiked & ~(any_cut[:, None] & (t_spk > t_cut[:, None]))
        fire = tf.where(spiked, t_spk, fire)
        s["fire_t"] = fire if s["fire_t"].shape.rank == 2 else fire[:, 0]
        spike = tf.where(spiked, t_spk, tf.fill(tf.shape(th), tf.constant(np.nan, f64)))
        # Samples inside the accepted step (t, t_new]: its own interpolant, before any rescaling.
        t_hi = t_new if any_cut is None else tf.where(any_cut, t_cut, t_new)
        in_step = accept[:, None] & (smp_t > t[:, None]) & (smp_t <= t_hi[:, None])
        smp_v = self._on_lanes(tf.reduce_any(in_step, axis=1),
                               lambda D_, q_, tn_, h_, st_, in_, sv_: tf.where(in_[:, :, None], history.interp(tf, D_, q_, tn_, h_, st_), sv_),
                               smp_v, (Dacc, 1), (q, 0), (t_new, 0), (h, 0), (smp_t, 0), (in_step, 0), (smp_v, 0))
        # Order and step for the next step, after q+1 steps at the same size.
        n_eq_acc = n_equal + 1
        consider = accept & (n_eq_acc >= q + 1)
        em = tf.where(q > 1, self._rms(tf.gather(self._err, tf.maximum(q - 1, 0))[None, :] * history.row(tf, Dacc, q) / scale_new),
                      tf.fill(tf.shape(h), tf.constant(np.inf, f64)))
        ep = tf.where(q < MAX_ORDER, self._rms(tf.gather(self._err, tf.minimum(q + 1, MAX_ORDER))[None, :]
                                                 * history.row(tf, Dacc, tf.minimum(q + 2, ROWS - 1)) / scale_new),
                      tf.fill(tf.shape(h), tf.constant(np.inf, f64)))
        f_down, f_up = step_factor(em, 0.0), step_factor(ep, 2.0)
        # The order promising the longest step; ties go to the lower order (argmax's first index).
        dq = tf.where((f_down >= f_same) & (f_down >= f_up), -tf.ones_like(q), tf.where(f_same >= f_up, tf.zeros_like(q), tf.ones_like(q)))
        q_next = tf.where(consider, q + dq, q)
        grow = tf.minimum(safety * tf.maximum(f_down, tf.maximum(f_same, f_up)), tf.constant(MAX_FACTOR, f64))
        # A step cut short to land on a stop time returns to the size it had before the cut, so
        # that stops (grid points, events) do not make the next steps start small.
        back = tf.minimum(h_orig, MAX_FACTOR * h) / h
        fac = tf.where(consider, grow, tf.where(trunc, back, tf.ones_like(h)))
        # One rescaling serves both outcomes: the new history after an accepted step, the old one
        # (shrunk) after a rejected step.
        base = [tf.where(accept[None, :], a, b) for a, b in zip(Dacc, D)]
        s["D"] = self._change_D(base, tf.where(accept, q_next, q),
                                tf.where(accept, fac, tf.where(reject, shrink, tf.ones_like(h))))
        s["t"] = tf.where(accept, t_new, t)
        s["order"] = tf.where(accept, q_next, q)
        h_acc = h * fac
        s["h"] = tf.where(accept, h_acc, tf.where(reject, h * shrink, tf.where(go, h, s["h"])))
        s["n_equal"] = tf.where(accept, tf.where(consider, tf.zeros_like(n_equal), n_eq_acc),
                                tf.where(reject, tf.zeros_like(n_equal), tf.where(go, n_equal, s["n_equal"])))
        s["failed"] = s["failed"] | (reject & (h * shrink < H_MIN_MS))
        if any_cut is not None:
            # Resume from the interpolant at the spike time with a fresh history.
            y_cut = tf.transpose(history.interp(tf, Dacc, q, t_new, h, t_cut[:, None])[:, 0, :])
            cut2 = any_cut[None, :]
            s["D"] = [tf.where(cut2, y_cut if i == 0 else tf.zeros_like(r), r) for i, r in enumerate(s["D"])]
            s["t"] = tf.where(any_cut, t_cut, s["t"])
            s["restart"] = s["restart"] | any_cut
        c["steps"] = c["steps"] + tf.cast(accept, i32)
        return s, c, spike, smp_v

    def _on_lanes(self, mask: Any, fn: Callable[..., Any], base: Any, *lane_args: tuple[Any, int]) -> Any:
        """``fn`` (elementwise per lane) where ``mask``, ``base`` elsewhere, at the cost of the
        masked lanes only: none → skipped; up to FEW_LANES → gathered into a batch of that size
        (a multiple of 32: the same vector arithmetic per lane, so bitwise as in the full batch),
        computed and scattered back; more → computed on the whole batch. Arguments are
        (tensor or list of tensors, lane axis) pairs."""
        tf = self.tf
        B = mask.shape[0]
        whole = lambda: fn(*(a for a, _ in lane_args))  # noqa: E731
        if B is None or B <= FEW_LANES + GUARD_LANES:
            return tf.cond(tf.reduce_any(mask), whole, lambda: base)

        def few() -> Any:
            idx, _ = history.live_first(tf, mask, FEW_LANES + GUARD_LANES)  # the guard lanes at the end unmasked
            got = fn(*(tf.nest.map_structure(lambda x: tf.gather(x, idx, axis=ax), a) for a, ax in lane_args))
            return tf.tensor_scatter_nd_update(base, idx[:, None], got)

        n = tf.reduce_sum(tf.cast(mask, tf.int32))
        return tf.cond(n == 0, lambda: base, lambda: tf.cond(n <= FEW_LANES, few, whole))

    # -- host interface ---------------------------------------------------------------------

    def _with_stages(self, stages: tuple[int, ...]) -> Callable[..., Any]:
        def advance(st: Any, t_stop: Any, ev_t: Any, ev_w: Any, smp_t: Any, params: Any, amps: Any, thresh: Any,
                    refr: Any, max_iter: Any, tol: Any, spike0: Any) -> Any:
            return self._advance(st, t_stop, ev_t, ev_w, smp_t, params, amps, thresh, refr, max_iter, tol, spike0, stages)
        return advance

    def tracing_count(self) -> int:
        """Traces made so far (each one a compilation): the run checks that it made none."""
        return int(sum(f.experimental_get_tracing_count() for f in self._fns.values()))

    def advance(self, st: dict[str, Any], t_stop: np.ndarray, ev_t: np.ndarray, ev_w: np.ndarray, params: np.ndarray,
                amps: np.ndarray, thresh: np.ndarray, refr: np.ndarray, max_iter: int, rtol: float, atol: float,
                smp_t: np.ndarray | None = None, *, min_live: int = 0, spike_slots: int = 1,
                stages: Sequence[int] = ()) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """One call; ``smp_t`` [B, S] are sample times (+inf = none), the last output their values
        [B, S, nv] (NaN where no step of this call covered the time). The call returns after
        ``max_iter`` iterations, when no neuron is live, or (after the first iteration) when at
        most ``min_live`` are: the caller goes on with those in a smaller batch. ``stages``
        (decreasing lane counts, each a multiple of 32 below B - GUARD_LANES): inside the call,
        once at most stages[i] lanes are live they go on gathered in a batch of that size plus
        the guard lanes; ``last_trips`` then holds the loop iterations of each stage. Spikes: [B]
        (or [B, M] for M voltage columns) with one slot, else [B, spike_slots] (or [B, K, M]),
        in the order they happened, NaN-padded."""
        tf = self.tf
        newton_tol = max(10.0 * np.finfo(float).eps / rtol, min(0.03, rtol ** 0.5))
        if smp_t is None:
            smp_t = np.full((t_stop.shape[0], 1), np.inf)
        args = ({k: tf.constant(v) for k, v in st.items()}, tf.constant(t_stop), tf.constant(ev_t),
                tf.constant(ev_w), tf.constant(smp_t), tf.constant(params), tf.constant(amps),
                tf.constant(thresh), tf.constant(refr), tf.constant(max_iter, tf.int32),
                tf.constant([rtol, atol, newton_tol, float(min_live)], tf.float64),
                tf.fill([t_stop.shape[0], spike_slots, len(self.v_cols)], tf.constant(np.nan, tf.float64)))
        # A concrete function per input signature: calling it skips tf.function's argument
        # binding and trace-cache lookup (a large part of the fixed cost of a call).
        stages = tuple(int(x) for x in stages)
        key = (stages,) + tuple((tuple(a.shape.as_list()), a.dtype) for a in tf.nest.flatten(args))
        fn = self._concrete.get(key)
        if fn is None:
            traced = self._fns.get(stages)
            if traced is None:
                traced = self._fns[stages] = tf.function(self._with_stages(stages), jit_compile=self.jit_compile,
                                                         autograph=False)
            fn = self._concrete[key] = traced.get_concrete_function(*args)
        out, spk, cnt, smp, trips = fn(*args)
        self.last_trips = trips.numpy()
        spk = spk.numpy()
        if spike_slots == 1:
            spk = spk[:, 0]
        return ({k: v.numpy() for k, v in out.items()}, spk[..., 0] if len(self.v_cols) == 1 else spk,
                {k: v.numpy() for k, v in cnt.items()}, smp.numpy())


_SHARED: dict[tuple, BdfKernel] = {}


def shared_kernel(model: NeuronModel, param_names: Sequence[str], stimuli: Sequence[Stimulus], *,
                  jit_compile: bool = True) -> BdfKernel:
    """One kernel (and compilation) per model, parameter layout and stimulus set in a process."""
    key = (model.name, tuple(param_names), tuple((s.shape, tuple(sorted(s.params.items()))) for s in stimuli), jit_compile)
    if key not in _SHARED:
        _SHARED[key] = BdfKernel(model, param_names, stimuli, jit_compile=jit_compile)
    return _SHARED[key]


def new_state(y0: np.ndarray, t0: float) -> dict[str, np.ndarray]:
    """Host state for neurons starting at t0 with values y0 [B, nv] (restart pending)."""
    B, nv = y0.shape
    D = np.zeros((ROWS, B, nv))
    D[0] = y0
    return {"t": np.full(B, float(t0)), "D": D, "order": np.ones(B, np.int32), "h": np.full(B, 1e-3),
            "n_equal": np.zeros(B, np.int32), "restart": np.ones(B, bool), "fire_t": np.full(B, -1e9),
            "ev_ptr": np.zeros(B, np.int32), "failed": np.zeros(B, bool)}
