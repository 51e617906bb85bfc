"""Strong and weak scaling of COBAHH under real mpiexec (1 and 2 ranks on this 2-core machine).

    python benchmarks/scaling.py            # N = 16000 strong, 8000 neurons/rank weak, 1 s
    python benchmarks/scaling.py --quick    # 200 ms, smaller networks (smoke test)

Prints a Markdown table (wall of the run phase, speedup, parallel efficiency, exchange share,
time per phase, load balance) and writes benchmarks/results/scaling.{json,png}. Weak scaling
keeps 2% connectivity between 8000·ranks neurons, so synapses per neuron grow with the network,
like the classic benchmark; the spike-exchange volume grows with it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUN_PHASES = ("integrate", "wait", "exchange", "deliver", "io")


def _mpiexec() -> str:
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else (shutil.which("mpiexec") or "mpiexec")


def run(ranks: int, n_total: int, duration_ms: float, out: Path, exchange: str = "alltoall") -> dict:
    e, i = int(n_total * 0.8), n_total - int(n_total * 0.8)
    args = ["run", str(ROOT / "jobs/cobahh.toml"), "--out", str(out), "-q", "--overwrite", f"--duration={duration_ms}",
            f"--set=populations.E.count={e}", f"--set=populations.I.count={i}", f'--set=engine.exchange="{exchange}"']
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    if ranks == 1:
        cmd = [sys.executable, "-m", "cluster_sim.cli", *args]
    else:
        cmd = [_mpiexec(), "--oversubscribe", "--bind-to", "core", "-n", str(ranks), sys.executable, "-m", "cluster_sim.cli", *args]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True, text=True)
    info = json.loads((out / "run.json").read_text())
    per_rank = info["per_rank"]
    run_s = max(sum(r[p] for p in RUN_PHASES) for r in per_rank)
    return {"ranks": ranks, "neurons": n_total, "synapses": info["n_synapses"], "rate_hz": sum(info["rates_hz"].values()) / 2,
            "run_s": run_s, "phases": {p: max(r[p] for r in per_rank) for p in RUN_PHASES},
            "startup_s": info["phases"]["startup"], "build_s": info["phases"]["build"], "load_balance": info["load_balance"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--exchange-only", action="store_true", help="only the table of exchange backends")
    args = ap.parse_args()
    if args.exchange_only:
        exchange_table(4000 if args.quick else 16000, 200.0 if args.quick else 1000.0)
        return
    duration = 200.0 if args.quick else 1000.0
    n_strong = 4000 if args.quick else 16000
    per_rank_weak = 2000 if args.quick else 8000
    repeats = 1 if args.quick else args.repeats
    rows: dict[str, list[dict]] = {"strong": [], "weak": []}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("strong", "weak"):
            samples: dict[int, list[dict]] = {1: [], 2: []}
            for rep in range(repeats):  # interleave 1- and 2-rank runs so machine noise hits both
                for ranks in (1, 2):
                    n = n_strong if kind == "strong" else per_rank_weak * ranks
                    samples[ranks].append(run(ranks, n, duration, Path(tmp) / f"{kind}{ranks}_{rep}"))
            for ranks, runs in samples.items():
                runs.sort(key=lambda r: r["run_s"])
                rows[kind].append(runs[len(runs) // 2])  # median by run time
    base = {k: v[0]["run_s"] for k, v in rows.items()}
    print(f"\nCOBAHH scaling, exp-Euler dt 0.1 ms, delay 1 ms, {duration:g} ms, alltoall exchange, median of {repeats}\n")
    print("| scaling | ranks | neurons | synapses | run s | speedup | efficiency | exchange+wait % | integrate | wait | exchange | deliver | io | load balance |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, rs in rows.items():
        for r in rs:
            if kind == "strong":
                r["speedup"] = base[kind] / r["run_s"]
                r["efficiency"] = r["speedup"] / r["ranks"]
            else:
                r["speedup"] = base[kind] / r["run_s"] * r["ranks"]
                r["efficiency"] = base[kind] / r["run_s"]
            comm = 100 * (r["phases"]["exchange"] + r["phases"]["wait"]) / r["run_s"]
            r["comm_share"] = comm
            ph = r["phases"]
            print(f"| {kind} | {r['ranks']} | {r['neurons']} | {r['synapses']} | {r['run_s']:.2f} | {r['speedup']:.2f} | "
                  f"{r['efficiency']:.2f} | {comm:.1f} | {ph['integrate']:.2f} | {ph['wait']:.2f} | {ph['exchange']:.2f} | "
                  f"{ph['deliver']:.2f} | {ph['io']:.2f} | {r['load_balance']:.3f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(rows, indent=2))
    _plot(rows, RESULTS / "scaling.png")
    print(f"\nwritten {RESULTS / 'scaling.json'} and {RESULTS / 'scaling.png'}")
    exchange_table(n_strong, duration)


def exchange_table(n_total: int, duration_ms: float) -> None:
    """ms per exchange and share of the run phase for each backend on 2 ranks (horovod only
    where it is installed: scripts/build_horovod.sh)."""
    sys.path.insert(0, str(ROOT))
    from cluster_sim.engine.exchange import horovod_available

    backends = ["allgather", "alltoall"] + (["horovod"] if horovod_available() else [])
    intervals = duration_ms / 1.0  # jobs/cobahh.toml: every delay is 1 ms, one exchange per ms
    print(f"\nSpike exchange backends, COBAHH N={n_total}, 2 ranks, {duration_ms:g} ms ({intervals:g} exchanges)\n")
    print("| backend | ms per exchange | exchange % of run | exchange+wait % of run | run s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in backends:
            r = run(2, n_total, duration_ms, Path(tmp) / name, exchange=name)
            ex, wait = r["phases"]["exchange"], r["phases"]["wait"]
            print(f"| {name} | {1000 * ex / intervals:.3f} | {100 * ex / r['run_s']:.1f} | "
                  f"{100 * (ex + wait) / r['run_s']:.1f} | {r['run_s']:.2f} |")


def _plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for kind, marker in (("strong", "o"), ("weak", "s")):
        rs = rows[kind]
        ranks = [r["ranks"] for r in rs]
        axes[0].plot(ranks, [r["run_s"] for r in rs], marker=marker, label=kind)
        axes[1].plot(ranks, [r["efficiency"] for r in rs], marker=marker, label=kind)
    for k, r in enumerate(rows["strong"] + rows["weak"]):
        bottom = 0.0
        for p, color in zip(RUN_PHASES, ("C0", "C3", "C1", "C2", "C4")):
            axes[2].bar(k, r["phases"][p], bottom=bottom, color=color, label=p if k == 0 else None)
            bottom += r["phases"][p]
    axes[2].set_xticks(range(4), [f"{'S' if k < 2 else 'W'}{r['ranks']}" for k, r in enumerate(rows["strong"] + rows["weak"])])
    axes[0].set(xlabel="ranks", ylabel="run phase (s)", title="wall time")
    axes[1].set(xlabel="ranks", ylabel="parallel efficiency", ylim=(0, 1.1), title="efficiency")
    axes[1].axhline(0.85, ls=":", color="gray")
    axes[2].set(ylabel="seconds (slowest rank)", title="time per phase")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
