"""Scaling statistics and plots: one definition of speedup and efficiency for every caller.

Rows come from scaling studies (``deploy/study.py``, one row per member run) and from
``benchmarks/scaling.py`` (one row per local run); both go through :func:`aggregate`, so a study
and the benchmark report the same speedup for the same timings.

Definitions, with ``t0`` the time on the smallest rank count ``n0`` of the same mode:

* strong scaling (fixed network): speedup ``S = t0 / t``, efficiency ``E = S * n0 / n``;
* weak scaling (network grows with the ranks): scaled speedup ``S = (n / n0) * t0 / t``
  (Gustafson: ``n / n0`` times the work in ``t``), efficiency ``E = t0 / t``.

In both cases ``E = S * n0 / n``, and ideal scaling is ``S = n / n0``, ``E = 1``.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

CONSTRUCTION_PHASES = ("startup", "build")
SCALINGS = ("strong", "weak")
# Colours grouped by mode: one hue per mode, shades for the parts of its time.
MODE_SHADES: Mapping[str, tuple[str, ...]] = {
    "bsp": ("#08519c", "#4292c6", "#9ecae1"),
    "async": ("#a63603", "#f16913", "#fdae6b"),
}
_OTHER_SHADES = (("#006d2c", "#41ab5d", "#a1d99b"), ("#54278f", "#807dba", "#bcbddc"))
PHASE_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")


def speedup_efficiency(scaling: str, base_ranks: int, base_s: float, ranks: int, seconds: float) -> tuple[float, float]:
    """(speedup, efficiency) of ``seconds`` on ``ranks`` against ``base_s`` on ``base_ranks``
    (see the module docstring); NaN where a time is missing or not positive."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling = {scaling!r}: must be one of {SCALINGS} (fix: pass 'strong' or 'weak')")
    if not (_ok(base_s) and _ok(seconds)) or base_ranks < 1 or ranks < 1:
        return math.nan, math.nan
    speedup = base_s / seconds * (ranks / base_ranks if scaling == "weak" else 1.0)
    return speedup, speedup * base_ranks / ranks


def _ok(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one sample, NaN for none)."""
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, s


def _floats(rows: Iterable[Mapping[str, Any]], key: str) -> list[float]:
    out = []
    for r in rows:
        try:
            out.append(float(r[key]))
        except (KeyError, TypeError, ValueError):
            continue
    return [x for x in out if math.isfinite(x)]


def aggregate(rows: Sequence[Mapping[str, Any]], scaling: str) -> list[dict[str, Any]]:
    """Mean/std over seeds and repetitions per (mode, nodes, ranks_per_node) of the COMPLETED rows
    with a ``wall_seconds``; speedup and efficiency of the total wall and of state propagation
    alone (``propagation_s``), real-time factors, per-phase means and per-population rates."""
    groups: dict[tuple[str, int, int], list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("state") != "COMPLETED" or r.get("wall_seconds") in ("", None):
            continue
        groups.setdefault((str(r["mode"]), int(r["nodes"]), int(r["ranks_per_node"])), []).append(r)
    phases = sorted({k for r in rows for k in r if k.startswith("phase_")})
    rates = sorted({k for r in rows for k in r if k.startswith("rate_hz_")})
    out: list[dict[str, Any]] = []
    for mode in sorted({k[0] for k in groups}):
        keys = sorted((k for k in groups if k[0] == mode), key=lambda k: (k[1] * k[2], k[1]))
        base: tuple[int, float, float] | None = None
        for k in keys:
            g = groups[k]
            ranks = k[1] * k[2]
            wall, wall_sd = mean_std(_floats(g, "wall_seconds"))
            sim_s = (_floats(g, "simulated_ms") or [0.0])[0] / 1000.0
            row: dict[str, Any] = {"mode": mode, "nodes": k[1], "ranks_per_node": k[2], "ranks": ranks,
                                   "samples": len(g), "wall_mean_s": wall, "wall_std_s": wall_sd}
            neurons = _floats(g, "n_neurons")
            if neurons:
                row["n_neurons"] = int(neurons[0])
            for key in ("construction_s", "propagation_s"):
                row[f"{key[:-2]}_mean_s"], row[f"{key[:-2]}_std_s"] = mean_std(_floats(g, key))
            prop = row["propagation_mean_s"]
            if base is None:
                base = (ranks, wall, prop)
            n0, t0, p0 = base
            row["speedup"], row["efficiency"] = speedup_efficiency(scaling, n0, t0, ranks, wall)
            # the same for state propagation alone (startup and network construction excluded)
            row["speedup_propagation"], row["efficiency_propagation"] = speedup_efficiency(scaling, n0, p0, ranks, prop)
            row["real_time_factor"] = wall / sim_s if sim_s else math.nan
            row["real_time_factor_propagation"] = prop / sim_s if sim_s and not math.isnan(prop) else math.nan
            for ph in phases:
                m, s = mean_std(_floats(g, ph))
                row[f"{ph}_mean_s"], row[f"{ph}_std_s"] = m, s
                row[f"rtf_{ph[6:]}"] = m / sim_s if sim_s else math.nan
            for key in rates:
                row[f"{key}_mean"], row[f"{key}_std"] = mean_std(_floats(g, key))
            out.append(row)
    return out


def mode_ratios(agg: Sequence[Mapping[str, Any]], a: str = "bsp", b: str = "async") -> list[dict[str, Any]]:
    """Per (nodes, ranks_per_node) present in both modes: their mean times and ``a / b`` ratios
    (> 1: ``b`` is faster), for the total wall and for state propagation."""
    by = {(r["mode"], r["nodes"], r["ranks_per_node"]): r for r in agg}
    out = []
    for (mode, nodes, rpn), ra in sorted(by.items(), key=lambda kv: (kv[0][1] * kv[0][2], kv[0][1])):
        rb = by.get((b, nodes, rpn))
        if mode != a or rb is None:
            continue
        row: dict[str, Any] = {"nodes": nodes, "ranks_per_node": rpn, "ranks": nodes * rpn}
        for key in ("wall", "propagation"):
            ta, tb = ra.get(f"{key}_mean_s", math.nan), rb.get(f"{key}_mean_s", math.nan)
            row[f"{a}_{key}_s"], row[f"{b}_{key}_s"] = ta, tb
            row[f"{key}_{a}_over_{b}"] = ta / tb if _ok(ta) and _ok(tb) else math.nan
        out.append(row)
    return out


def figure_meta(rows: Sequence[Mapping[str, Any]], agg: Sequence[Mapping[str, Any]], *, site: str = "",
                scaling: str = "strong", statistic: str = "mean ± std") -> str:
    """One line for every figure: network size, simulated duration, site and repetitions."""
    neurons = sorted({int(x) for x in _floats(rows, "n_neurons")})
    size = ("N = " + (f"{neurons[0]:,}" if len(neurons) == 1 else f"{neurons[0]:,}..{neurons[-1]:,}")) if neurons \
        else "N = ?"
    if scaling == "weak" and len(neurons) > 1:
        size += " (grows with ranks)"
    durations = sorted({x for x in _floats(rows, "simulated_ms")})
    dur = (f"{durations[0]:g} ms simulated" if len(durations) == 1 else
           f"{durations[0]:g}..{durations[-1]:g} ms simulated") if durations else "duration ?"
    samples = sorted({int(r["samples"]) for r in agg})
    reps = (f"{samples[0]}" if len(samples) == 1 else f"{samples[0]}..{samples[-1]}") if samples else "0"
    return f"{size}, {dur}, site {site or '?'}, {reps} run(s) per point ({statistic})"


def markdown(agg: Sequence[Mapping[str, Any]], ratios: Sequence[Mapping[str, Any]], *, scaling: str, meta: str) -> str:
    """The summary table (per-population rates included) and the BSP/async table, as Markdown."""
    pops = sorted({k[8:-5] for r in agg for k in r if k.startswith("rate_hz_") and k.endswith("_mean")})
    head = ["mode", "nodes", "ranks", "runs", "wall s (mean ± std)", "propagation s", "speedup", "efficiency",
            "real-time factor", *[f"rate {p} Hz" for p in pops]]
    lines = [f"# {scaling} scaling", "", meta, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in agg:
        cells = [r["mode"], str(r["nodes"]), str(r["ranks"]), str(r["samples"]),
                 f"{r['wall_mean_s']:.3g} ± {r['wall_std_s']:.2g}", _g(r.get("propagation_mean_s")),
                 _g(r.get("speedup")), _g(r.get("efficiency")), _g(r.get("real_time_factor")),
                 *[_g(r.get(f"rate_hz_{p}_mean")) for p in pops]]
        lines.append("| " + " | ".join(cells) + " |")
    if ratios:
        lines += ["", "## BSP / async (same ranks; > 1 means async is faster)", "",
                  "| nodes | ranks | bsp wall s | async wall s | bsp/async wall | bsp/async propagation |",
                  "|---|---|---|---|---|---|"]
        for r in ratios:
            lines.append(f"| {r['nodes']} | {r['ranks']} | {_g(r['bsp_wall_s'])} | {_g(r['async_wall_s'])} | "
                         f"{_g(r['wall_bsp_over_async'])} | {_g(r['propagation_bsp_over_async'])} |")
    return "\n".join(lines) + "\n"


def _g(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def spans_decade(values: Iterable[float]) -> bool:
    """True when the positive finite values differ by a factor of 10 or more (use a log axis)."""
    vs = [v for v in values if _ok(v)]
    return bool(vs) and max(vs) / min(vs) >= 10.0


def _shades(mode: str, modes: Sequence[str]) -> tuple[str, ...]:
    if mode in MODE_SHADES:
        return MODE_SHADES[mode]
    others = [m for m in modes if m not in MODE_SHADES]
    return _OTHER_SHADES[others.index(mode) % len(_OTHER_SHADES)]


def plot(agg: Sequence[Mapping[str, Any]], outdir: Path, scaling: str, *, meta: str = "") -> list[Path]:
    """``wall_time.png`` (every mode on the same axes, plus a BSP/async ratio panel when both ran),
    ``speedup.png``, ``efficiency.png`` and ``rtf_phases.png`` (one panel per mode, shared y axis);
    each carries ``meta`` (see :func:`figure_meta`). Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    paths: list[Path] = []
    modes = sorted({r["mode"] for r in agg}, key=lambda m: (m != "bsp", m))  # BSP first, the baseline
    xs = sorted({r["ranks"] for r in agg})
    has_prop = any(_ok(r.get("propagation_mean_s")) for r in agg)
    ratios = mode_ratios(agg)
    strip = 0.04 * max(1, math.ceil(len(meta) / (6.4 * 15)))  # room for the wrapped context line(s)

    def frame(ax: Any, title: str, ylabel: str, ys: Iterable[float]) -> None:
        ax.set_xlabel("MPI ranks")
        ax.set_ylabel(ylabel)
        if spans_decade(xs):
            ax.set_xscale("log", base=2)
        if spans_decade(list(ys)):
            ax.set_yscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.minorticks_off() if ax.get_xscale() == "log" else None
        # the title inside the axes frame, so no layout can cut it off
        ax.text(0.02, 0.97, title, transform=ax.transAxes, ha="left", va="top", fontsize=10, weight="bold",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
        ax.grid(True, which="major", alpha=0.3)
        ax.margins(y=0.25)  # headroom for the title and legend above the curves

    def save(f: Any, name: str) -> None:
        if meta:  # wrapped to the figure's width, in the strip the layout keeps free at the bottom
            f.text(0.5, 0.005, textwrap.fill(meta, int(f.get_figwidth() * 15)), ha="center", va="bottom",
                   fontsize=8, color="#333333")
        p = outdir / f"{name}.png"
        f.savefig(p, dpi=100)
        plt.close(f)
        paths.append(p)

    # absolute wall time: every mode on the same axes; BSP/async ratio below
    f = plt.figure(figsize=(6.4, 5.6 if ratios else 4.2), layout="constrained")
    f.get_layout_engine().set(rect=(0, strip, 1, 1 - strip))  # type: ignore[union-attr,call-arg]  # constrained layout takes rect
    axes = f.subplots(2, 1, sharex=True, height_ratios=(3, 1.3)) if ratios else [f.subplots()]
    ax = axes[0]
    ys: list[float] = []
    for mode in modes:
        rs = [r for r in agg if r["mode"] == mode]
        shade = _shades(mode, modes)
        x = [r["ranks"] for r in rs]
        ax.errorbar(x, [r["wall_mean_s"] for r in rs], yerr=[r["wall_std_s"] for r in rs], marker="o", capsize=3,
                    color=shade[0], label=f"{mode}: total")
        ys += [r["wall_mean_s"] for r in rs]
        if has_prop:
            for part, ls, colour in (("propagation", "--", shade[1]), ("construction", ":", shade[2])):
                ax.errorbar(x, [r[f"{part}_mean_s"] for r in rs], yerr=[r[f"{part}_std_s"] for r in rs], marker=".",
                            ls=ls, capsize=2, color=colour, label=f"{mode}: {part}")
                ys += [r[f"{part}_mean_s"] for r in rs]
    frame(ax, f"{scaling} scaling: wall time", "wall time [s]", ys)
    ax.legend(fontsize="small", loc="upper right")
    if ratios:
        rx = axes[1]
        rx.plot([r["ranks"] for r in ratios], [r["wall_bsp_over_async"] for r in ratios], marker="o", color="#333333",
                label="total")
        if has_prop:
            rx.plot([r["ranks"] for r in ratios], [r["propagation_bsp_over_async"] for r in ratios], marker=".",
                    ls="--", color="#888888", label="propagation")
        rx.axhline(1.0, color="k", lw=0.8, ls=":")
        frame(rx, "BSP / async (> 1: async faster)", "ratio", [r["wall_bsp_over_async"] for r in ratios])
        rx.legend(fontsize="small", loc="lower right")
        ax.set_xlabel("")
    save(f, "wall_time")

    basis = "_propagation" if has_prop else ""
    for key, label in (("speedup", "speedup"), ("efficiency", "parallel efficiency")):
        f = plt.figure(figsize=(6.4, 4.2), layout="constrained")
        f.get_layout_engine().set(rect=(0, strip, 1, 1 - strip))  # type: ignore[union-attr,call-arg]  # constrained layout takes rect
        ax = f.subplots()
        ys = []
        for mode in modes:
            rs = [r for r in agg if r["mode"] == mode]
            ax.plot([r["ranks"] for r in rs], [r[key + basis] for r in rs], marker="o", color=_shades(mode, modes)[0],
                    label=mode)
            ys += [r[key + basis] for r in rs]
        ideal = [x / xs[0] for x in xs] if key == "speedup" else [1.0] * len(xs)
        if xs:
            ax.plot(xs, ideal, "k--", lw=0.8, label="ideal")
        name = label + (" (state propagation)" if has_prop else "") + (" (scaled)" if scaling == "weak" and
                                                                        key == "speedup" else "")
        frame(ax, f"{scaling} scaling: {name}", label, ys + ideal)
        ax.legend(fontsize="small", loc="lower right" if key == "speedup" else "lower left")
        save(f, key)

    # real-time factor of state propagation by phase, one panel per mode, the same y axis
    phases = sorted({k[4:] for r in agg for k in r if k.startswith("rtf_")} - set(CONSTRUCTION_PHASES))
    n = max(1, len(modes))
    f = plt.figure(figsize=(5 * n, 4.2), layout="constrained")
    f.get_layout_engine().set(rect=(0, strip, 1, 1 - strip))  # type: ignore[union-attr,call-arg]  # constrained layout takes rect
    axs = f.subplots(1, n, sharey=True, squeeze=False)[0]
    top = 0.0
    for ax, mode in zip(axs, modes or ["-"]):
        rs = [r for r in agg if r["mode"] == mode]
        x = [str(r["ranks"]) for r in rs]
        bottom = [0.0] * len(rs)
        for i, ph in enumerate(phases):
            y = [r.get(f"rtf_{ph}", 0.0) if _ok(r.get(f"rtf_{ph}")) else 0.0 for r in rs]
            ax.bar(x, y, bottom=bottom, label=ph, color=PHASE_COLOURS[i % len(PHASE_COLOURS)])
            bottom = [b + yy for b, yy in zip(bottom, y)]
        top = max([top, *bottom])
        ax.set_xlabel("MPI ranks")
        ax.text(0.02, 0.97, f"{mode}: real-time factor by phase", transform=ax.transAxes, ha="left", va="top",
                fontsize=10, weight="bold", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
        ax.grid(True, axis="y", alpha=0.3)
        if phases:
            ax.legend(fontsize="small", loc="upper right")
    # stacked bars stay on a linear axis (a log axis misstates stacked parts); headroom for the titles
    axs[0].set_ylim(0, 1.3 * top if top > 0 else 1.0)
    axs[0].set_ylabel("wall / model time (propagation)")
    save(f, "rtf_phases")
    return paths
