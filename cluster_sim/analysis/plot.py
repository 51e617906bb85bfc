"""``cluster-sim plot``: raster, population rate and traces in one PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cluster_sim.analysis.reader import open_spikes, run_info, spec_order
from cluster_sim.analysis.stats import rate_histogram

MAX_RASTER_POINTS = 200_000


def plot_run(run_dir: Path, output: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cluster_sim.record.traces import read_trace

    run_dir = Path(run_dir)
    reports = sorted(run_dir.glob("report_*.h5"))
    n_rows = 2 + len(reports)
    fig, axes = plt.subplots(n_rows, 1, figsize=(10, 2.2 * n_rows + 1.5), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.3] + [1.3] * len(reports)})
    info = run_info(run_dir)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    offset = 0
    with open_spikes(run_dir) as pops:
        order = [p for p in spec_order(run_dir) if p in pops] + [p for p in pops if p not in spec_order(run_dir)]
        for k, pop in enumerate(order):
            ts, ids, n = pops[pop]
            t = np.asarray(ts.compute())
            i = np.asarray(ids.compute()).astype(np.int64)
            if t.size > MAX_RASTER_POINTS:  # keep whole neurons so each raster row stays truthful
                keep_neurons = np.arange(0, n, int(np.ceil(t.size / MAX_RASTER_POINTS)))
                sel = np.isin(i, keep_neurons)
                t, i = t[sel], i[sel]
            axes[0].scatter(t, i + offset, s=1.5, marker="|", color=colors[k % len(colors)], label=f"{pop} ({n})")
            edges, rate = rate_histogram(run_dir, pop, bin_ms=max(1.0, info.get("simulated_ms", 1000.0) / 400))
            axes[1].plot(edges[:-1], rate, color=colors[k % len(colors)], lw=1, label=pop)
            offset += n
    axes[0].set_ylabel("neuron")
    axes[0].legend(loc="upper right", fontsize=8, markerscale=4)
    axes[0].set_title(f"{info.get('name', run_dir.name)}: {info.get('n_neurons', '?')} neurons, "
                      f"{info.get('n_spikes', '?')} spikes, {info.get('simulated_ms', '?')} ms ({info.get('method', '')}, dt {info.get('dt_ms', '?')} ms)")
    axes[1].set_ylabel("rate (Hz)")
    axes[1].legend(loc="upper right", fontsize=8)
    for ax, rep in zip(axes[2:], reports):
        times, node_ids, data = read_trace(rep)
        for j in range(min(data.shape[1], 6)):
            ax.plot(times, data[:, j], lw=0.7, label=f"#{node_ids[j]}")
        ax.set_ylabel(rep.stem.replace("report_", ""))
        ax.legend(loc="upper right", fontsize=7, ncol=6)
    axes[-1].set_xlabel("time (ms)")
    fig.tight_layout()
    output = output or run_dir / "overview.png"
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
