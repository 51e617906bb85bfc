"""What ``cluster-sim compare`` writes: compare.json/md/png and sweep.json/md/png."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cluster_sim.analysis.compare import REFERENCE, _f, describe_crossover
from cluster_sim.record.checkpoint import atomic_write_bytes


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(_jsonable(data), indent=2))


def _jsonable(x: Any) -> Any:
    """NaN/inf become null (strict JSON); NumPy scalars become Python numbers."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "–"
    if v == 0:
        return "0"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if abs(v) >= 1000:
        return f"{v:.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.{digits}g}"


def _pct(x: Any) -> str:
    v = _f(x)
    return "–" if not math.isfinite(v) else f"{100 * v:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (a literal | inside a cell must be written \\|)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _describe(m: Mapping[str, Any]) -> str:
    if m["mode"] == "bsp":
        return f"{m['method']} dt {_fmt(m['dt_ms'])} ms"
    return f"rtol {m['rtol']:g} atol {m['atol']:g}"


COLUMNS = ("mode", "setting", "steps/neuron", "RHS evals/neuron", "wall s", "run s", "integrate s", "communicate s", "wait s",
           "spikes", "rate Hz", "CV", "rate err %", "ΔCV", "matched %", "mean \\|Δt\\| ms", "max \\|Δt\\| ms", "steps / rk4", "wall / rk4",
           "run / rk4")


def markdown(result: Mapping[str, Any]) -> str:
    """compare.md: one row per mode (the reference last, compared with itself)."""
    rows = []
    for label in result["order"]:
        m = result["modes"][label]
        e = m["errors"]
        r = m["vs_bsp_rk4"]
        rows.append([label, _describe(m), _fmt(m["steps_per_neuron"], 4), _fmt(m["rhs_evals_per_neuron"], 4), _fmt(m["wall_s"]),
                     _fmt(m["run_s"]), _fmt(m["integrate_s"]), _fmt(m["communicate_s"]), _fmt(m["wait_s"]),
                     str(m["n_spikes"]), _fmt(m["rate_hz"]), _fmt(m["cv"]), _pct(m["rate_rel_error"]), _fmt(m["cv_diff"], 2),
                     _pct(e["matched_fraction"]), _fmt(e["mean_abs_error_ms"]), _fmt(e["max_abs_error_ms"]),
                     _fmt(r["steps"]), _fmt(r["wall"]), _fmt(r["run"])])
    ref = result["reference"]
    ref_text = (f"async at rtol = atol = {ref['rtol']:g}" if ref["kind"] == "async" else f"BSP RK4 at dt {_fmt(ref['dt_ms'])} ms")
    sources = [p for p, d in result["populations"].items() if d.get("source")]
    notes = [
        f"# compare: {Path(result['job']).name}",
        "",
        f"{_fmt(result['duration_ms'])} ms simulated, {result['ranks']} rank(s); overrides: "
        + (", ".join(f"`{o}`" for o in result["overrides"]) or "none") + ".",
        f"Reference: {ref_text}. Spikes matched per neuron (mutual nearest) within {result['tolerance_ms']:g} ms; "
        "matched % = matched / max(reference spikes, mode spikes).",
        "wall s = the run's wall_seconds (includes startup: imports + XLA compile); run s = integrate + wait + exchange + "
        "deliver + io; communicate s = exchange + deliver. Rate, CV and errors are over integrated populations"
        + (f" (spike sources left out: {', '.join(sources)})" if sources else "") + ".",
        "",
        _table(COLUMNS, rows),
        "",
    ]
    notes += [f"**Warning:** {w}." for w in result.get("warnings", [])]
    return "\n".join(notes) + ("\n" if result.get("warnings") else "")


def sweep_markdown(summary: Mapping[str, Any]) -> str:
    modes = list(summary["modes"])
    header = [summary["key"], "ref rate Hz"]
    for m in modes:
        header += [f"{m} steps/neuron", f"{m} wall s", f"{m} run s", f"{m} max \\|Δt\\| ms"]
    header += ["async/rk4 steps", "async/rk4 wall", "async/rk4 run"]
    rows = []
    for r in summary["rows"]:
        row = [_fmt(r["value"]), _fmt(r["reference_rate_hz"])]
        for m in modes:
            d = r.get(m, {})
            row += [_fmt(d.get("steps_per_neuron"), 4), _fmt(d.get("wall_s")), _fmt(d.get("run_s")), _fmt(d.get("max_abs_error_ms"))]
        a = r["async_vs_rk4"]
        row += [_fmt(a["steps"]), _fmt(a["wall"]), _fmt(a["run"])]
        rows.append(row)
    lines = [f"# sweep: {summary['key']} ({Path(summary['job']).name})", "",
             "Ratios < 1: async cheaper than BSP RK4. Per-value details: `<key>=<value>/compare.md`.", "",
             _table(header, rows), ""]
    cross = summary.get("crossover") or {}
    for k, what in (("run", "async / RK4 run phase"), ("wall", "async / RK4 wall time")):
        if k in cross:
            lines.append(f"Crossover ({summary['key']}): {describe_crossover(cross[k], what)}.")
    return "\n".join(lines) + ("\n" if cross else "")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_fig(fig: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


def plot_compare(result: Mapping[str, Any], errors_ms: Mapping[str, np.ndarray], path: Path) -> Path:
    """Bars of steps/neuron (and RHS evals) and of wall/run seconds per mode, log scale; CDF of
    the matched spike-time errors of every mode against the reference."""
    plt = _pyplot()
    labels = list(result["order"])
    x = np.arange(len(labels))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))

    def bars(ax: Any, series: Sequence[tuple[str, str]], ylabel: str) -> None:
        w = 0.8 / len(series)
        for k, (key, name) in enumerate(series):
            vals = np.array([_f(result["modes"][lb][key]) for lb in labels])
            vals = np.where(np.isfinite(vals) & (vals > 0), vals, np.nan)
            ax.bar(x + (k - (len(series) - 1) / 2) * w, vals, w, label=name)
        ax.set_xticks(x, labels, rotation=15)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8, loc="best", framealpha=0.6)
        ax.grid(axis="y", which="both", alpha=0.3)

    bars(axes[0], [("steps_per_neuron", "steps / neuron"), ("rhs_evals_per_neuron", "RHS evals / neuron")], "per neuron")
    axes[0].set_title("integration work")
    bars(axes[1], [("wall_s", "wall (incl. startup)"), ("run_s", "run phases"), ("integrate_s", "integrate")], "seconds")
    axes[1].set_title("time")
    ax = axes[2]
    floor = 1e-9
    drew = False
    for lb in labels:
        if lb == REFERENCE:
            continue
        e = np.sort(np.maximum(np.asarray(errors_ms.get(lb, np.zeros(0))), floor))
        if e.size:
            ax.step(e, np.arange(1, e.size + 1) / e.size, where="post",
                    label=f"{lb} ({_pct(result['modes'][lb]['errors']['matched_fraction'])}% matched)")
            drew = True
    if drew:
        ax.set_xscale("log")
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no matched spikes", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"|Δt| vs reference (ms, floor {floor:g}; window {result['tolerance_ms']:g} ms)")
    ax.set_ylabel("fraction of matched spikes ≤ |Δt|")
    ax.set_title("spike-time error (CDF)")
    ax.grid(alpha=0.3)
    fig.suptitle(f"{Path(result['job']).name}: {result['duration_ms']:g} ms, reference {result['reference']['kind']}")
    fig.tight_layout()
    _save_fig(fig, path)
    plt.close(fig)
    return path


def plot_sweep(summary: Mapping[str, Any], path: Path) -> Path:
    """Steps/neuron, wall, run phases and max spike-time error vs the swept value, one line per
    mode, log y."""
    plt = _pyplot()
    xs = np.array([r["value"] for r in summary["rows"]])
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    for m in summary["modes"]:
        for ax, key in zip(axes, ("steps_per_neuron", "wall_s", "run_s", "max_abs_error_ms")):
            ys = np.array([_f(r.get(m, {}).get(key)) for r in summary["rows"]])
            ys = np.where(np.isfinite(ys) & (ys > 0), ys, np.nan)
            ax.plot(xs, ys, "o-", label=m)
    cross = summary.get("crossover") or {}
    for ax, title in zip(axes, ("steps / neuron", "wall s (incl. startup)", "run phases s (excl. startup)",
                                "max |Δt| vs reference (ms)")):
        for k, style in (("run", "--"), ("wall", ":")):
            c = cross.get(k) or {}
            if c.get("status") == "crosses":  # where async stops winning (async / RK4 reaches 1)
                ax.axvline(c["value"], color="k", ls=style, lw=1, label=f"crossover ({k}) {c['value']:.3g}")
        ax.set_yscale("log")
        ax.set_xlabel(summary["key"])
        ax.set_title(title)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save_fig(fig, path)
    plt.close(fig)
    return path
