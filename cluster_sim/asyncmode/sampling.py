"""Traces in the asynchronous mode, on BSP's sampling grid: row i of a recording is the state at
(i + 1)·sampling_ms. Each neuron's values come from its own BDF dense output (the kernel
evaluates the interpolant of the accepted step covering each sample time), so recording never
changes a step. Here: which sample times fall in a grid interval, the per-rank store of rows
whose neurons have all passed them, and rank 0's assembly of columns arriving from many ranks."""
from __future__ import annotations

import math

import numpy as np

from cluster_sim.asyncmode.local import Recording

_EPS = 1e-9  # sample times within 1e-9 sampling periods of a grid time belong to the earlier interval


def rows_upto(rec: Recording, t_ms: float) -> int:
    """Number of samples at or before ``t_ms``."""
    return min(rec.n_rows, int(math.floor(t_ms / rec.sampling_ms + _EPS)))


def slots_per_interval(rec: Recording, D: float) -> int:
    """Most samples one grid interval of length D can hold (a fixed kernel input width)."""
    return int(math.ceil(D / rec.sampling_ms)) + 1


def window(rec: Recording, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows, times) of the samples in (t0, t1]; times clipped to t1 so that rounding never puts
    a sample just beyond the interval whose last step covers it."""
    lo, hi = rows_upto(rec, t0), rows_upto(rec, t1)
    rows = np.arange(lo, hi, dtype=np.int64)
    return rows, np.minimum((rows + 1) * rec.sampling_ms, t1)


class SampleStore:
    """This rank's sampled columns of every recording, until all their neurons passed a row."""

    def __init__(self, recordings: list[Recording], D: float, start_c: int = 0) -> None:
        self.recs, self.D = recordings, D
        self.base = [rows_upto(r, start_c * D) for r in recordings]
        self.buf = [np.full((0, r.lidx.size), np.nan) for r in recordings]

    def put(self, r_i: int, col: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
        """values [len(col), len(rows)] of columns ``col`` (positions in rec.lidx) at ``rows``."""
        if rows.size == 0 or col.size == 0:
            return
        need = int(rows.max()) + 1 - self.base[r_i]
        buf = self.buf[r_i]
        if need > buf.shape[0]:
            grow = np.full((max(need, 2 * buf.shape[0]) - buf.shape[0], buf.shape[1]), np.nan)
            buf = self.buf[r_i] = np.concatenate([buf, grow])
        buf[(rows - self.base[r_i])[None, :], col[:, None]] = values

    def take(self, c: np.ndarray) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
        """(recording, first row, columns in the recording's neuron list, data [rows × cols]) of the
        rows every local recorded neuron has passed, given the per-neuron completed intervals c."""
        out = []
        for r_i, rec in enumerate(self.recs):
            if rec.lidx.size == 0:
                continue
            hi = rows_upto(rec, float(c[rec.lidx].min()) * self.D)
            n = hi - self.base[r_i]
            if n <= 0:
                continue
            data = self.buf[r_i][:n]
            if np.isnan(data).any():  # a covering step always exists: this would be an engine bug
                raise RuntimeError(f"recording {rec.name}: samples missing below row {hi}")
            out.append((rec.name, self.base[r_i], rec.cols, data.copy()))
            self.buf[r_i] = self.buf[r_i][n:]
            self.base[r_i] = hi
        return out


class TraceAssembler:
    """Rank 0: rows of each recording become writable once every rank's columns arrived."""

    def __init__(self, widths: dict[str, int], start_rows: dict[str, int]) -> None:
        self.width = dict(widths)
        self.written = dict(start_rows)
        self.buf = {k: np.full((0, w), np.nan) for k, w in widths.items()}
        self.filled = {k: np.zeros(0, np.int64) for k in widths}

    def add(self, name: str, row0: int, cols: np.ndarray, data: np.ndarray) -> None:
        off = row0 - self.written[name]
        need = off + data.shape[0]
        if need > self.buf[name].shape[0]:
            extra = need - self.buf[name].shape[0]
            self.buf[name] = np.concatenate([self.buf[name], np.full((extra, self.width[name]), np.nan)])
            self.filled[name] = np.concatenate([self.filled[name], np.zeros(extra, np.int64)])
        self.buf[name][off:need, cols] = data
        self.filled[name][off:need] += cols.size

    def ready(self, name: str) -> np.ndarray:
        """The complete rows from the first unwritten one on (removed from the buffer)."""
        full = self.filled[name] == self.width[name]
        n = int(np.argmin(full)) if not full.all() else full.size
        rows = self.buf[name][:n]
        self.buf[name], self.filled[name] = self.buf[name][n:], self.filled[name][n:]
        self.written[name] += n
        return rows
