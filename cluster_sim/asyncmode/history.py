"""The NDF/BDF history of the async kernel: a difference array per neuron, kept as a list of
ROWS rows [variables, neurons] (neurons minor, see ``bdf``), and what is computed from it:
the row of a per-neuron order, the rescaling for a new step size, the step's interpolating
polynomial (dense output) and the threshold crossing on it. Elementwise per neuron (bitwise the
same in any batch); knows nothing of the step control, events or the host."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

MAX_ORDER = 5
ROWS = MAX_ORDER + 3  # difference array rows 0..q+2
BISECTIONS = 60  # brackets a spike time to 2^-60 of the step: below float64 resolution

# NDF coefficients (Shampine & Reichelt 1997, Table 1); kappa = 0 gives classic BDF at order 5.
KAPPA = np.array([0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0])
GAMMA = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, MAX_ORDER + 1))])
ALPHA = (1.0 - KAPPA) * GAMMA
ERROR_CONST = KAPPA * GAMMA + 1.0 / np.arange(1, MAX_ORDER + 2)


def r_matrix(factor: float) -> np.ndarray:
    n = MAX_ORDER + 1
    M = np.zeros((n, n))
    i = np.arange(1, n)[:, None]
    j = np.arange(1, n)[None, :]
    M[1:, 1:] = (i - 1 - factor * j) / i
    M[0] = 1.0
    return np.cumprod(M, axis=0)


U = r_matrix(1.0)  # upper triangular


def row(tf: Any, D: Sequence[Any], q: Any) -> Any:
    """D[q_b][:, b] for every neuron b."""
    out = D[0]
    for i in range(1, len(D)):
        out = tf.where((q == i)[None, :], D[i], out)
    return out


def rescale(tf: Any, D: Sequence[Any], q: Any, factor: Any) -> list[Any]:
    """Re-express the history for step h·factor (per neuron), rows 0..q: D[:q+1] ← (R·U)ᵀ D[:q+1]
    with R[i,k] = Π_{r=1..i} (r-1-factor·k)/r and U = R at factor 1. Unrolled over the
    6×6 entries as elementwise [B] arithmetic: batched 6×6 matmuls cost ~10x more on XLA:CPU."""
    n = MAX_ORDER + 1
    one = tf.ones_like(factor)
    R = [[one if k == 0 else one for k in range(n)]]  # row 0: all ones
    for i in range(1, n):
        R.append([tf.zeros_like(factor) if k == 0 else R[i - 1][k] * ((i - 1.0 - factor * k) / i) for k in range(n)])
    RU: list[list[Any]] = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            acc = None
            for k in range(n):
                u = U[k, j]
                if u == 0.0:
                    continue
                term = R[i][k] * u
                acc = term if acc is None else acc + term
            RU[i][j] = acc if acc is not None else tf.zeros_like(factor)
    rows = list(D)
    q = tf.where(factor == 1.0, -tf.ones_like(q), q)  # factor 1 is the identity: leave the lane as it is
    inq = [tf.cast(i <= q, tf.float64)[None, :] for i in range(n)]
    out = []
    for j in range(n):
        acc = None
        for i in range(n):
            term = (RU[i][j][None, :] * inq[i]) * rows[i]
            acc = term if acc is None else acc + term
        out.append(tf.where((j <= q)[None, :], acc, rows[j]))
    return out + rows[n:]


def interp(tf: Any, D: Sequence[Any], q: Any, t_new: Any, h: Any, tau: Any) -> Any:
    """Every variable at times tau [B, S] on the accepted step's interpolating polynomial
    y(τ) = D0 + Σ_{k=1..q} D_k Π_{j<k} (τ - (t_new - j·h)) / ((j+1)·h)  →  [B, S, nv].
    Unrolled over the ≤ 5 terms (elementwise, so bitwise the same in any batch)."""
    out = tf.broadcast_to(tf.transpose(D[0])[:, None, :], [tf.shape(tau)[0], tf.shape(tau)[1], int(D[0].shape[0])])
    prod = tf.ones_like(tau)
    for k in range(1, MAX_ORDER + 1):
        j = float(k - 1)
        prod = prod * (tau - (t_new[:, None] - j * h[:, None])) / ((j + 1.0) * h[:, None])
        use = (k <= q)[:, None, None]
        out = tf.where(use, out + prod[:, :, None] * tf.transpose(D[k])[:, None, :], out)
    return out

def root(tf: Any, D: Sequence[Any], q: Any, t_old: Any, t_new: Any, h: Any, thresh: Any, v_cols: Sequence[int]) -> Any:
    """Bisection for V(t) = threshold on the step's interpolating polynomial, for every
    voltage column: times [B, M] (thresh [B, M])."""
    f64 = tf.float64
    k = tf.range(MAX_ORDER, dtype=f64)[None, None, :]  # 0..4
    shift = t_new[:, None, None] - h[:, None, None] * k
    denom = h[:, None, None] * (1.0 + k)
    use = tf.cast(tf.range(MAX_ORDER)[None, None, :] < q[:, None, None], f64)
    Dv = tf.transpose(tf.stack([tf.gather(D[k], v_cols, axis=0) for k in range(1, MAX_ORDER + 1)], axis=2), [1, 0, 2])  # [B, M, 5]
    v0 = tf.transpose(tf.gather(D[0], v_cols, axis=0))

    def v_at(tt: Any) -> Any:
        x = (tt[:, :, None] - shift) / denom
        x = use * x + (1.0 - use)  # factors beyond the order contribute 1, their D row 0
        p = tf.math.cumprod(x, axis=2)
        return v0 + tf.reduce_sum(use * Dv * p, axis=2)

    def b_body(i: Any, lo: Any, hi: Any) -> Any:
        mid = 0.5 * (lo + hi)
        above = v_at(mid) >= thresh
        return i + 1, tf.where(above, lo, mid), tf.where(above, mid, hi)

    lo0 = tf.broadcast_to(t_old[:, None], tf.shape(thresh))
    hi0 = tf.broadcast_to(t_new[:, None], tf.shape(thresh))
    _, _, hi = tf.while_loop(lambda i, lo, hi: i < BISECTIONS, b_body, (tf.constant(0), lo0, hi0))
    return hi


def live_first(tf: Any, mask: Any, k: int) -> tuple[Any, Any]:
    """Indices of k lanes, the lanes of ``mask`` first, then the others (as inert guard lanes),
    each in lane order; and every lane's rank in that order. A cumulative sum ranks the lanes
    and a scatter inverts the ranking: no sort (``top_k`` sorted all the lanes)."""
    m = tf.cast(mask, tf.int32)
    rank = tf.where(mask, tf.cumsum(m) - 1, tf.reduce_sum(m) + tf.cumsum(1 - m) - 1)
    idx = tf.scatter_nd(rank[:, None], tf.range(tf.shape(mask)[0]), tf.shape(mask))[:k]
    return idx, rank
