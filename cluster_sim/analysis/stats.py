"""Statistics of one run (rates, population rate histograms, ISI mean and CV) and spike-time
matching between two runs, streamed over the dask arrays of ``analysis.reader``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cluster_sim.analysis.reader import da, duration_ms, open_spikes, run_info


def population_rates(run_dir: str | Path, t_start_ms: float = 0.0, t_stop_ms: float | None = None) -> dict[str, float]:
    """Mean firing rate (Hz) per population in [t_start, t_stop)."""
    run_dir = Path(run_dir)
    out = {}
    with open_spikes(run_dir) as pops:
        for pop, (ts, _, n) in pops.items():
            if t_stop_ms is not None or run_info(run_dir):
                stop = t_stop_ms if t_stop_ms is not None else duration_ms(run_dir, 0.0)
                count = int(((ts >= t_start_ms) & (ts < stop)).sum().compute())
            else:  # no run.json (a killed run): the window ends at the last spike, which counts
                stop = float(ts.max().compute()) if ts.size else 0.0
                count = int(((ts >= t_start_ms) & (ts <= stop)).sum().compute())
            out[pop] = count / (n * (stop - t_start_ms) * 1e-3) if n and stop > t_start_ms else 0.0
    return out


def rate_histogram(run_dir: str | Path, population: str, bin_ms: float = 5.0, t_stop_ms: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(bin edges ms, population rate in Hz per neuron) for one population."""
    run_dir = Path(run_dir)
    with open_spikes(run_dir) as pops:
        ts, _, n = pops[population]
        stop = t_stop_ms or duration_ms(run_dir, float(ts.max().compute()) if ts.size else bin_ms)
        edges = np.arange(0.0, stop + bin_ms, bin_ms)
        counts, _ = da.histogram(ts, bins=edges)
        return edges, counts.compute() / (max(n, 1) * bin_ms * 1e-3)


def isi_stats(run_dir: str | Path, population: str) -> dict[str, np.ndarray]:
    """Per-neuron ISI mean and CV, streamed block by block in time order (memory ∝ neurons)."""
    with open_spikes(run_dir) as pops:
        ts, ids, n = pops[population]
        last = np.full(n, np.nan)
        s1, s2, cnt = np.zeros(n), np.zeros(n), np.zeros(n)
        for tb, ib in zip(ts.to_delayed(), ids.to_delayed()):
            t = np.asarray(tb.compute())
            i = np.asarray(ib.compute()).astype(np.int64)
            order = np.lexsort((t, i))
            t, i = t[order], i[order]
            first = np.ones(t.size, bool)
            first[1:] = i[1:] != i[:-1]
            prev = np.where(first, last[i], np.concatenate([[np.nan], t[:-1]]))
            isi = t - prev
            ok = np.isfinite(isi)
            np.add.at(s1, i[ok], isi[ok])
            np.add.at(s2, i[ok], isi[ok] ** 2)
            np.add.at(cnt, i[ok], 1)
            last_idx = np.nonzero(np.concatenate([i[1:] != i[:-1], [True]]))[0] if t.size else np.zeros(0, int)
            last[i[last_idx]] = t[last_idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / cnt
        var = s2 / cnt - mean ** 2
        cv = np.sqrt(np.maximum(var, 0.0)) / mean
    return {"mean_isi_ms": mean, "cv": cv, "n_isi": cnt}


def summarize(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    info = run_info(run_dir)
    rates = population_rates(run_dir)
    pops = {}
    with open_spikes(run_dir) as data:
        for pop, (ts, ids, n) in data.items():
            n_spk = int(ts.shape[0])
            active = int(da.unique(ids).compute().size) if n_spk else 0
            pops[pop] = {"n_neurons": n, "n_spikes": n_spk, "rate_hz": rates[pop], "active_fraction": active / n if n else 0.0}
    for pop in pops:
        cv = isi_stats(run_dir, pop)["cv"]
        pops[pop]["isi_cv"] = float(np.nanmean(cv)) if np.isfinite(cv).any() else float("nan")
    return {"run": info, "populations": pops}


def compare_spikes(run_a: str | Path, run_b: str | Path, tolerance_ms: float = 1.0) -> dict[str, Any]:
    """Match spikes of the same neuron between two runs (mutual nearest within ``tolerance_ms``);
    report counts, matched pairs and the mean/max absolute time error of matched pairs."""
    result: dict[str, Any] = {"tolerance_ms": tolerance_ms, "populations": {}}
    tot = {"n_a": 0, "n_b": 0, "matched": 0, "sum_err": 0.0, "max_err": 0.0}
    with open_spikes(run_a) as A, open_spikes(run_b) as B:
        for pop in A:
            ta, ia = (np.asarray(x.compute()) for x in A[pop][:2])
            tb, ib = (np.asarray(x.compute()) for x in B[pop][:2]) if pop in B else (np.zeros(0), np.zeros(0, np.uint64))
            errs = _match(ta, ia.astype(np.int64), tb, ib.astype(np.int64), tolerance_ms)
            r = {"n_a": int(ta.size), "n_b": int(tb.size), "matched": int(errs.size),
                 "mean_abs_error_ms": float(errs.mean()) if errs.size else float("nan"),
                 "max_abs_error_ms": float(errs.max()) if errs.size else float("nan")}
            result["populations"][pop] = r
            tot["n_a"] += r["n_a"]
            tot["n_b"] += r["n_b"]
            tot["matched"] += r["matched"]
            tot["sum_err"] += float(errs.sum())
            tot["max_err"] = max(tot["max_err"], float(errs.max()) if errs.size else 0.0)
    result.update(n_a=tot["n_a"], n_b=tot["n_b"], matched=tot["matched"],
                  mean_abs_error_ms=tot["sum_err"] / tot["matched"] if tot["matched"] else float("nan"),
                  max_abs_error_ms=tot["max_err"] if tot["matched"] else float("nan"))
    return result


def match_spike_times(ta: np.ndarray, ia: np.ndarray, tb: np.ndarray, ib: np.ndarray, tolerance_ms: float) -> np.ndarray:
    """Absolute time errors of mutually nearest same-neuron spike pairs within the tolerance."""
    return _match(ta, ia, tb, ib, tolerance_ms)


def _match(ta: np.ndarray, ia: np.ndarray, tb: np.ndarray, ib: np.ndarray, tol: float) -> np.ndarray:
    """Mutual-nearest matching per neuron, exact in the times (no id/time folding): merge both
    runs' spikes sorted by (neuron, time); each spike's nearest neighbours from the other run are
    the closest ones of the same neuron before and after it in that order."""
    if ta.size == 0 or tb.size == 0:
        return np.zeros(0)
    t = np.concatenate([ta, tb]).astype(np.float64)
    i = np.concatenate([ia, ib]).astype(np.int64)
    src = np.concatenate([np.zeros(ta.size, np.int8), np.ones(tb.size, np.int8)])
    order = np.lexsort((src, t, i))
    t, i, src = t[order], i[order], src[order]
    n = t.size
    idx = np.arange(n)

    def nearest_other(side: int) -> np.ndarray:
        """For every element, index of the nearest element of run ``side`` of the same neuron (-1)."""
        is_side = src == side
        prev = np.where(is_side, idx, -1)
        prev = np.maximum.accumulate(prev)
        prev_excl = np.concatenate([[-1], prev[:-1]])
        nxt = np.where(is_side, idx, n)
        nxt = np.minimum.accumulate(nxt[::-1])[::-1]
        nxt_excl = np.concatenate([nxt[1:], [n]])
        p_ok = (prev_excl >= 0) & (i[np.maximum(prev_excl, 0)] == i)
        q_ok = (nxt_excl < n) & (i[np.minimum(nxt_excl, n - 1)] == i)
        dp = np.where(p_ok, t - t[np.maximum(prev_excl, 0)], np.inf)
        dq = np.where(q_ok, t[np.minimum(nxt_excl, n - 1)] - t, np.inf)
        best = np.where(dp <= dq, prev_excl, nxt_excl)
        return np.where(np.isfinite(np.minimum(dp, dq)), best, -1)

    to_b = nearest_other(1)
    to_a = nearest_other(0)
    a_pos = np.nonzero(src == 0)[0]
    partner = to_b[a_pos]
    ok = partner >= 0
    a_pos, partner = a_pos[ok], partner[ok]
    mutual = to_a[partner] == a_pos
    err = np.abs(t[partner[mutual]] - t[a_pos[mutual]])
    return err[err <= tol]
