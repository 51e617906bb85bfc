"""The compiled interval: one ``tf.function`` call advances the local neurons by one
communication interval (the minimum synaptic delay) with ``tf.scan`` over its steps, and returns
the new state, the spike times and the sampled recordings — never the trajectory.

Inside a step: spike-triggered increments for this step are added, the integrator advances every
variable (graded couplings and stimuli are evaluated at each stage), and upward threshold
crossings become spikes with linearly interpolated times, subject to the refractory period.
The kernel knows nothing of MPI, files or the ring buffer: increments arrive as an input tensor.

Few tensors cross the call boundary (each costs ~15 µs of Python per call): the state is packed
per population ([variables, neurons]), the increments of every receiving variable arrive as one
[steps, columns] block, and the spikes and samples of every population leave as one block each.
"""
from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import numpy as np

from cluster_sim.engine.integrators import METHODS
from cluster_sim.models.base import Drive
from cluster_sim.models.synapses import GradedKinetic
from cluster_sim.network.build import Network, Population, graded_indices
from cluster_sim.runtime.device import multi_output_fusion


# Local arrays are padded to a multiple of this many neurons: XLA's vectorised loops compute
# the last (n mod vector width) elements in a scalar remainder whose exp() can differ in the
# last bit, which would make results depend on how neurons are split across ranks.
LANES = 32
# Host blocks whose first byte sits on this boundary (XLA:CPU's buffer alignment) reach the kernel
# uncopied: the ring buffer is allocated so (``delivery.RingBuffers``).
BLOCK_ALIGN = 64


def padded(n: int) -> int:
    return -(-n // LANES) * LANES


def state_key(owner: str, var: str) -> str:
    return f"{owner}.{var}"


def integrated_populations(net: Network) -> list[Population]:
    """The populations the kernel integrates: all but spike sources (which have no state; the
    interval loop computes their spikes from ``models.poisson.spike_times``)."""
    return [pop for pop in net.populations.values() if not pop.model.is_source]


class Columns(NamedTuple):
    """Consecutive column blocks of one packed array: name -> (first column, n), and the width."""

    at: dict[str, tuple[int, int]]
    width: int


def column_blocks(sizes: dict[str, int], lanes: bool = True) -> Columns:
    """One block per name, in order; with ``lanes`` each padded to a multiple of LANES."""
    at, width = {}, 0
    for name, n in sizes.items():
        at[name] = (width, n)
        width += padded(n) if lanes else n
    return Columns(at, width)


def event_columns(net: Network) -> Columns:
    """Where each variable receiving spike-triggered increments ("pop.var") sits in the packed
    increment block: the ring buffers' layout and the kernel's input."""
    sizes: dict[str, int] = {}
    for proj in net.projections:
        if not isinstance(proj.synapse, GradedKinetic):
            sizes[state_key(proj.target, getattr(proj.synapse, "var"))] = net.populations[proj.target].local.size  # a ConductanceJump
    return column_blocks(sizes)


@dataclass
class KernelLayout:
    """Names and shapes the interval function exchanges with the host."""

    integrated: list[str]  # keys integrated by the method
    fire_keys: dict[str, str]  # population -> key of its last-spike-time array
    event_keys: list[str]  # keys that receive spike-triggered increments ("pop.var")
    recordings: list[tuple[str, str, str, np.ndarray]]  # (name, pop, var, local positions)
    event_cols: Columns  # event key -> columns of the increment block
    spike_cols: Columns  # population -> columns of the spike block
    sample_cols: Columns  # recording -> columns of the sample block (not padded)
    groups: list[tuple[str, list[str], bool]]  # packed state: (name, keys stacked, float64?)


def initial_state(net: Network) -> dict[str, np.ndarray]:
    """The full kernel state (float64 NumPy) for the local neurons of ``net``."""
    state: dict[str, np.ndarray] = {}
    for pop in integrated_populations(net):
        for var in pop.model.variables:
            state[state_key(pop.name, var)] = pop.init[var].astype(np.float64)
        state[state_key(pop.name, "fire_t")] = np.full(pop.local.size, -1e9)
    for proj in net.projections:
        if isinstance(proj.synapse, GradedKinetic):
            n = net.populations[proj.source].local.size
            for var, value in proj.synapse.initial().items():
                state[state_key(proj.spec.name, var)] = np.full(n, value)
    return state


# A graded projection is summed densely when its widest row holds at least this fraction of
# the sources (and the matrix is not huge): on XLA:CPU a gathered synapse (ELL) costs ~4x a
# dense element of the vectorised column sum (the AL at p = 0.5: step 26.8 -> 18.3 µs; at
# p = 0.05 dense is 3.5x slower; benchmarks/README.md).
DENSE_MIN_FILL = 0.25
DENSE_MAX_ELEMENTS = 1 << 22


class GradedSum(NamedTuple):
    """How one graded projection's conductance g[target] = Σ w · open[source] is computed: dense
    (``src`` None, ``w`` [sources, targets], zero where unconnected: a column sum that vectorises
    over targets) or ELLPACK (``src``, ``w`` [targets, max in-degree], padding with weight 0: a
    gather and a row sum). Both sum a target's synapses in source order, rows padded to LANES."""

    src: np.ndarray | None
    w: np.ndarray


def graded_sum(net: Network, proj: Any) -> GradedSum:
    src_pos, tgt = graded_indices(net, proj)
    n_src, n_tgt = padded(net.populations[proj.source].local.size), padded(net.populations[proj.target].local.size)
    order = np.lexsort((src_pos, tgt))  # by target, then source: the summation order
    src_pos, tgt, weight = src_pos[order], tgt[order], np.asarray(proj.weight, np.float64)[order]
    counts = np.bincount(tgt, minlength=n_tgt)
    width = max(1, int(counts.max()) if counts.size else 1)
    if width >= DENSE_MIN_FILL * n_src and n_src * n_tgt <= DENSE_MAX_ELEMENTS:
        w = np.zeros((n_src, n_tgt))
        np.add.at(w, (src_pos, tgt), weight)
        return GradedSum(None, w)
    col = np.arange(src_pos.size) - np.repeat(np.cumsum(counts) - counts, counts)
    src_ell = np.zeros((n_tgt, width), np.int64)
    w_ell = np.zeros((n_tgt, width))
    src_ell[tgt, col] = src_pos
    w_ell[tgt, col] = weight
    return GradedSum(src_ell, w_ell)


class IntervalResult(NamedTuple):
    """What one interval returns: the new state (packed device tensors), spike times per
    integrated population ([n_steps, n_local] float64, NaN where none; views of ``spike_block``,
    [n_steps, columns] over every population), recordings ([n_steps, k]) and whether every state
    variable is still finite (checked inside the same compiled call)."""

    state: dict[str, Any]
    spikes: dict[str, np.ndarray]
    samples: dict[str, np.ndarray]
    finite: bool
    spike_block: np.ndarray


class IntervalKernel:
    """Builds and calls the compiled interval function for one local network."""

    def __init__(self, net: Network, *, precision: str = "float64", method: str = "rk4", dt_ms: float = 0.01,
                 jit_compile: bool = True, loop: str = "while", materialize_stages: bool | None = None) -> None:
        import tensorflow as tf

        from cluster_sim.models._ops import tf_ops

        self.tf, self.net, self.dt, self.loop = tf, net, float(dt_ms), loop
        # Only without XLA's multi-output fusion: with it shared work is already computed once, and
        # the gathers would only split the fusions (runtime/device.py).
        self.materialize_stages = not multi_output_fusion() if materialize_stages is None else materialize_stages
        self.dtype = tf.float64 if precision == "float64" else tf.float32
        self.ops = tf_ops(precision)
        self.method = METHODS[method]
        self.layout = self._layout()
        self._graded = []
        for proj in net.projections:
            if isinstance(proj.synapse, GradedKinetic):
                gs = graded_sum(net, proj)
                self._graded.append((proj, None if gs.src is None else tf.constant(gs.src), tf.constant(gs.w, self.dtype)))
        self._stim = [(s, {p: tf.constant(self._pad(a, p, 0.0), self.dtype) for p, a in s.amplitude.items() if np.any(a)})
                      for s in net.stimuli]
        self._fn = tf.function(self._interval, jit_compile=jit_compile, autograph=False)
        self._concrete: dict[int, Any] = {}  # interval length (steps) -> traced function
        self._col_gid: np.ndarray | None = None  # global id per spike-block column (spike_events)

    # -- layout -----------------------------------------------------------------------------

    def _layout(self) -> KernelLayout:
        net = self.net
        integrated, fire_keys = [], {}
        for pop in integrated_populations(net):
            integrated += [state_key(pop.name, v) for v in pop.model.variables]
            fire_keys[pop.name] = state_key(pop.name, "fire_t")
        for proj in net.projections:
            if isinstance(proj.synapse, GradedKinetic):
                integrated += [state_key(proj.spec.name, v) for v in proj.synapse.variables]
        event_cols = event_columns(net)
        recs = []
        for rec in net.spec.recordings:
            local = net.populations[rec.population].local
            pos = np.searchsorted(local, np.asarray(rec.neurons, np.int64))
            present = (pos < local.size) & (local[np.minimum(pos, max(local.size - 1, 0))] == np.asarray(rec.neurons)) if local.size else np.zeros(len(rec.neurons), bool)
            recs.append((rec.name, rec.population, rec.variable, pos[present].astype(np.int64)))
        spike_cols = column_blocks({pop.name: pop.local.size for pop in integrated_populations(net)})
        sample_cols = column_blocks({name: pos.size for name, _, _, pos in recs}, lanes=False)
        # State packed per population (graded synapse state with its source's), float64 apart
        # where the precision is float32 (spike times are always float64).
        groups: dict[tuple[str, bool], list[str]] = {}
        f64 = self.dtype == self.tf.float64
        for key in integrated + list(fire_keys.values()):
            groups.setdefault((self._owner(key), key.endswith(".fire_t") or f64), []).append(key)
        packed = [(owner if is64 == f64 else f"{owner}:f64", keys, is64) for (owner, is64), keys in groups.items()]
        return KernelLayout(integrated, fire_keys, list(event_cols.at), recs, event_cols, spike_cols, sample_cols, packed)

    # -- the step ---------------------------------------------------------------------------

    def _rhs(self, t64: Any, y: dict[str, Any], fire: dict[str, Any], t_step: Any) -> dict[str, tuple[Any, Any]]:
        tf, ops, dtype = self.tf, self.ops, self.dtype
        zero = 0.0
        drives = {pop.name: [zero, zero, zero] for pop in integrated_populations(self.net)}
        terms: dict[str, tuple[Any, Any]] = {}
        for stim, amps in self._stim:
            if not amps:
                continue
            # Evaluate inside the step (stage times clamped ε away from its ends): a switch
            # on a grid point then acts from the next step, and RK4 keeps its order.
            eps = 1e-9 * self.dt
            t_in = tf.clip_by_value(t64, t_step + eps, t_step + self.dt - eps)
            shape = tf.cast(stim.waveform.shape(ops, stim.params, t_in), dtype)
            for pop_name, amp in amps.items():
                drives[pop_name][0] = drives[pop_name][0] + amp * shape
        for proj, src, w in self._graded:
            syn = cast(GradedKinetic, proj.synapse)
            p = proj.params
            s = {v: y[state_key(proj.spec.name, v)] for v in syn.variables}
            if syn.signal == "v":
                T = syn.transmitter(ops, p, y[state_key(proj.source, "v")], t64, 0.0)
            else:
                T = tf.cast(syn.transmitter(ops, p, fire[proj.source], t64, proj.spec.delay_ms), dtype)
            for v, ab in syn.terms(ops, p, s, T).items():
                terms[state_key(proj.spec.name, v)] = ab
            o = syn.open_fraction(ops, p, s)
            g = tf.reduce_sum(w * o[:, None], axis=0) if src is None else tf.reduce_sum(w * tf.gather(o, src), axis=1)
            d = drives[proj.target]
            d[1] = d[1] + g
            d[2] = d[2] + g * p["E_mV"]
        for pop in integrated_populations(self.net):
            yp = {v: y[state_key(pop.name, v)] for v in pop.model.variables}
            for v, ab in pop.model.terms(ops, pop.params, yp, Drive(*drives[pop.name])).items():
                terms[state_key(pop.name, v)] = ab
        return terms

    def _stage_ops(self, zero: Any) -> Any:
        """The ops the integrator sees: ``self.ops``, plus ``materialize`` where XLA's multi-output
        fusion is off (a user's XLA flags): a gather of each stage's derivatives at positions offset
        by ``zero``, a runtime 0 that XLA cannot fold. XLA:CPU does not duplicate a gather into its
        consumers, so each stage's derivatives are computed once into a buffer; otherwise it copies
        the earlier stages' expressions into every fusion that reads them (the AL's RK4 step 1.5x
        faster; benchmarks/README.md). Values are untouched."""
        if not self.materialize_stages:
            return self.ops
        tf = self.tf

        def materialize(d: dict[str, Any]) -> dict[str, Any]:
            return {key: tf.gather(x, tf.range(int(x.shape[0])) + zero) for key, x in d.items()}

        return types.SimpleNamespace(**vars(self.ops), materialize=materialize)

    def _step(self, y: dict[str, Any], k: Any, inc: dict[str, Any], ops: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        tf, dt = self.tf, self.dt
        t64 = tf.cast(k, tf.float64) * dt
        fire = {pop: y[key] for pop, key in self.layout.fire_keys.items()}
        yi = {key: y[key] for key in self.layout.integrated}
        for key, x in inc.items():
            yi[key] = yi[key] + x
        new = self.method(lambda t, s: self._rhs(t, s, fire, t64), t64, yi, dt, ops)
        spikes = {}
        for pop in integrated_populations(self.net):
            th = pop.model.threshold_mV(pop.params)
            v0, v1 = yi[state_key(pop.name, "v")], new[state_key(pop.name, "v")]
            cross = (v0 < th) & (v1 >= th)
            frac = tf.cast((th - v0) / tf.where(cross, v1 - v0, tf.ones_like(v0)), tf.float64)
            ts = t64 + dt * frac
            ok = cross & (ts - fire[pop.name] >= pop.model.refractory_ms(pop.params))
            fire[pop.name] = tf.where(ok, ts, fire[pop.name])
            spikes[pop.name] = tf.where(ok, ts, tf.constant(np.nan, tf.float64))
        out = dict(new)
        for pop_name, key in self.layout.fire_keys.items():
            out[key] = fire[pop_name]
        samples = [tf.gather(new[state_key(rp, var)], pos) for _, rp, var, pos in self.layout.recordings]
        spike_row = tf.concat([spikes[p] for p in self.layout.fire_keys], 0)
        sample_row = tf.concat(samples, 0) if samples else tf.zeros([0], self.dtype)
        return out, spike_row, sample_row

    def _interval(self, packed: dict[str, Any], step0: Any, block: Any) -> tuple[Any, Any, Any, Any]:
        tf, layout = self.tf, self.layout
        state = {key: packed[name][i] for name, keys, _ in layout.groups for i, key in enumerate(keys)}
        n_steps = block.shape[0]  # static: one concrete function per epoch length
        steps = step0 + tf.range(n_steps, dtype=tf.int64)
        inputs = {key: block[:, c0:c0 + padded(n)] for key, (c0, n) in layout.event_cols.at.items()}
        spike_w, sample_w = layout.spike_cols.width, layout.sample_cols.width
        # step0 >= 0: a zero known only at run time (a constant would let XLA fold the gathers away).
        ops = self._stage_ops(tf.cast(tf.minimum(step0, 0), tf.int32))

        if self.loop == "while":
            # The default: a scan written as a while loop with TensorArrays for the per-step
            # outputs only. tf.scan must stack every carried variable (its output is its carry),
            # which costs ~1.3x here (benchmarks/kernel_loop.py).
            ta_spk = tf.TensorArray(tf.float64, size=n_steps, element_shape=[spike_w])
            ta_smp = tf.TensorArray(self.dtype, size=n_steps, element_shape=[sample_w])

            def body(i: Any, y: Any, ta1: Any, ta2: Any) -> Any:
                inc = {k: v[i] for k, v in inputs.items()}
                y2, spk, smp = self._step(y, steps[i], inc, ops)
                return i + 1, y2, ta1.write(i, spk), ta2.write(i, smp)

            _, final, ta_spk, ta_smp = tf.while_loop(lambda i, *a: i < n_steps, body, (0, state, ta_spk, ta_smp))
            spikes, samples = ta_spk.stack(), ta_smp.stack()
        else:
            def scan_fn(carry: Any, elem: Any) -> Any:
                y, _, _ = carry
                k, inc = elem
                return self._step(y, k, inc, ops)

            init = (state, tf.zeros([spike_w], tf.float64), tf.zeros([sample_w], self.dtype))
            ys, spikes, samples = tf.scan(scan_fn, (steps, inputs), initializer=init)
            final = {k: v[-1] for k, v in ys.items()}
        out = {name: tf.stack([final[k] for k in keys]) for name, keys, _ in layout.groups}
        return out, spikes, samples, self._finite(final)

    def _finite(self, state: dict[str, Any]) -> Any:
        """One fused reduction over every state variable of every population: is all finite.
        Part of the interval function: a separate call would cost a second dispatch per interval."""
        tf = self.tf
        flags = [tf.reduce_all(tf.math.is_finite(v)) for k, v in state.items() if not k.endswith(".fire_t")]
        return tf.reduce_all(tf.stack(flags)) if flags else tf.constant(True)

    # -- host interface ---------------------------------------------------------------------

    def _owner(self, key: str) -> str:
        """Population whose neurons index the state array ``key``."""
        name = key.split(".")[0]
        if name in self.net.populations:
            return name
        return next(p.source for p in self.net.projections if p.spec.name == name)

    def _pad(self, arr: np.ndarray, pop: str, fill: float | None = None) -> np.ndarray:
        n = arr.shape[-1]
        extra = padded(n) - n
        if extra == 0:
            return arr
        width = [(0, 0)] * (arr.ndim - 1) + [(0, extra)]
        return np.pad(arr, width, mode="edge") if fill is None else np.pad(arr, width, constant_values=fill)

    def to_device(self, state: dict[str, np.ndarray]) -> dict[str, Any]:
        """Host state (float64 arrays by key, as ``initial_state``) -> the packed device state."""
        tf = self.tf
        return {name: tf.constant(np.stack([self._pad(state[k], self._owner(k)) for k in keys]),
                                  tf.float64 if is64 else self.dtype)
                for name, keys, is64 in self.layout.groups}

    def to_host(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for name, keys, _ in self.layout.groups:
            arr = state[name].numpy()
            n = self.net.populations[self._owner(keys[0])].local.size
            for i, k in enumerate(keys):
                out[k] = np.asarray(arr[i, :n], dtype=np.float64)
        return out

    def pack_inputs(self, inputs: dict[str, np.ndarray], n_steps: int) -> np.ndarray:
        """Increments by key ([n_steps, n_local], or padded) -> the block ``feeds`` takes."""
        cols = self.layout.event_cols
        block = np.zeros((n_steps, cols.width), self.dtype.as_numpy_dtype)
        for key, (c0, n) in cols.at.items():
            arr = inputs[key]
            block[:, c0:c0 + arr.shape[1]] = arr
        return block

    def run(self, state: dict[str, Any], step0: int, n_steps: int, inputs: np.ndarray | dict[str, np.ndarray]) -> IntervalResult:
        """Advance ``n_steps`` from global step ``step0``. ``inputs`` is the increment block
        [n_steps, columns] as ``RingBuffers.take`` gives it, or a dict by key ([n_steps, n_local]).
        Spikes are returned for the integrated populations only (not for spike sources)."""
        return self.fetch(self.call(state, self.feeds(step0, n_steps, inputs)))

    # The three parts of ``run``, for a caller that overlaps the call with other work: ``feeds``
    # and ``fetch`` hold the GIL, ``call`` runs compiled code (and releases it).
    def feeds(self, step0: int, n_steps: int, inputs: np.ndarray | dict[str, np.ndarray]) -> tuple[Any, Any]:
        tf = self.tf
        block = self.pack_inputs(inputs, n_steps) if isinstance(inputs, dict) else inputs
        return tf.constant(step0, tf.int64), self._block_tensor(block)

    def _block_tensor(self, block: np.ndarray) -> Any:
        """The increment block as a tensor: the ring buffer's rows themselves (DLPack, no copy)
        where they are already in the kernel's layout (dtype, C order, ``BLOCK_ALIGN``-aligned, as
        ``RingBuffers.take`` gives them), else a copy. The block must not change until the call
        has returned."""
        tf = self.tf
        if (block.size and block.dtype == self.dtype.as_numpy_dtype and block.flags.c_contiguous
                and block.ctypes.data % BLOCK_ALIGN == 0):
            return tf.experimental.dlpack.from_dlpack(block.__dlpack__())
        return tf.constant(block, self.dtype)

    def call(self, state: dict[str, Any], feeds: tuple[Any, Any]) -> tuple[Any, ...]:
        if not self.layout.fire_keys:  # only spike sources here: nothing to integrate
            return state, None, None, None
        step0, block = feeds
        n_steps = int(block.shape[0])
        # The concrete function for this epoch length (a few: the epochs of a whole interval and
        # of the last, shorter one): calling it skips tf.function's per-call signature matching,
        # a few hundred µs per call on a loaded 2-core machine (benchmarks/kernel_loop.py).
        fn = self._concrete.get(n_steps)
        if fn is None:
            fn = self._concrete[n_steps] = self._fn.get_concrete_function(state, step0, block)
        return tuple(fn(state, step0, block))

    def fetch(self, out: tuple[Any, ...]) -> IntervalResult:
        new_state, spikes, samples, finite = out
        if finite is None:
            return IntervalResult(new_state, {}, {}, True, np.zeros((0, 0)))
        spk, smp = spikes.numpy(), samples.numpy()
        return IntervalResult(new_state, {p: spk[:, c0:c0 + n] for p, (c0, n) in self.layout.spike_cols.at.items()},
                              {r: smp[:, c0:c0 + k] for r, (c0, k) in self.layout.sample_cols.at.items()},
                              bool(finite.numpy()), spk)

    def spike_events(self, res: IntervalResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The interval's spikes as (global ids, step within the interval, times), in (step, column)
        order: one scan over the spike block of every population."""
        if self._col_gid is None:
            net = self.net
            self._col_gid = np.full(self.layout.spike_cols.width, -1, np.int64)  # -1: padding lanes
            for pop, (c0, n) in self.layout.spike_cols.at.items():
                self._col_gid[c0:c0 + n] = net.layout.gid(pop, net.populations[pop].local)
        flat = res.spike_block.reshape(-1)
        hit = np.flatnonzero(~np.isnan(flat))
        rows, cols = np.divmod(hit, max(res.spike_block.shape[1], 1))
        gids = self._col_gid[cols]
        keep = gids >= 0  # padding lanes copy a real neuron: drop their spikes
        return gids[keep], rows[keep], flat[hit[keep]]
