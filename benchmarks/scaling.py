"""Strong and weak scaling of COBAHH under real mpiexec (1 and 2 ranks on this 2-core machine).

    python benchmarks/scaling.py            # N = 16000 strong, 8000 neurons/rank weak, 1 s
    python benchmarks/scaling.py --quick    # 200 ms, smaller networks (smoke test)

Prints a Markdown table (wall of the run phase, speedup, parallel efficiency, exchange share,
time per phase, load balance) and writes benchmarks/results/scaling.json and the scaling study's
plots (cluster_sim.analysis.scaling) under benchmarks/results/scaling-{strong,weak}/. Weak scaling
keeps 2% connectivity between 8000·ranks neurons, so synapses per neuron grow with the network,
like the classic benchmark; the spike-exchange volume grows with it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster_sim.analysis import scaling as S  # noqa: E402  (the study's statistics and plots)
from cluster_sim.deploy import local  # noqa: E402  (the project's one mpiexec runner)

RESULTS = ROOT / "benchmarks" / "results"
RUN_PHASES = ("integrate", "wait", "exchange", "deliver", "io")


def run(ranks: int, n_total: int, duration_ms: float, out: Path, exchange: str = "alltoall") -> dict:
    e, i = int(n_total * 0.8), n_total - int(n_total * 0.8)
    args = ["run", str(ROOT / "jobs/cobahh.toml"), "--out", str(out), "-q", "--overwrite", f"--duration={duration_ms}",
            f"--set=populations.E.count={e}", f"--set=populations.I.count={i}", f'--set=engine.exchange="{exchange}"']
    cp = local.run_cli(ranks, args, cwd=ROOT, launcher_args=["--bind-to", "core"])
    if cp.returncode != 0:
        raise subprocess.CalledProcessError(cp.returncode, cp.args, cp.stdout, cp.stderr)
    info = json.loads((out / "run.json").read_text())
    per_rank = info["per_rank"]
    run_s = max(sum(r[p] for p in RUN_PHASES) for r in per_rank)
    return {"ranks": ranks, "neurons": n_total, "synapses": info["n_synapses"], "rates_hz": info["rates_hz"],
            "rate_hz": sum(info["rates_hz"].values()) / len(info["rates_hz"]), "simulated_ms": info["simulated_ms"],
            "run_s": run_s, "phases": {p: max(r[p] for r in per_rank) for p in RUN_PHASES},
            "startup_s": info["phases"]["startup"], "build_s": info["phases"]["build"], "load_balance": info["load_balance"]}


def member_rows(samples: dict[int, list[dict]]) -> list[dict]:
    """The median run (by run phase) per rank count, as the rows a scaling study aggregates."""
    medians = {ranks: sorted(runs, key=lambda r: r["run_s"])[len(runs) // 2] for ranks, runs in samples.items()}
    return [{"mode": "bsp", "nodes": 1, "ranks_per_node": ranks, "state": "COMPLETED", "wall_seconds": r["run_s"],
             "simulated_ms": r["simulated_ms"], "n_neurons": r["neurons"],
             **{f"rate_hz_{p}": hz for p, hz in r["rates_hz"].items()},
             **{f"phase_{p}": sec for p, sec in r["phases"].items()}} for ranks, r in sorted(medians.items())]


def summarise(samples: dict[int, list[dict]], kind: str) -> list[dict]:
    """The median run per rank count, with speedup and efficiency from
    :func:`cluster_sim.analysis.scaling.aggregate`, exactly as a scaling study computes them."""
    medians = {ranks: sorted(runs, key=lambda r: r["run_s"])[len(runs) // 2] for ranks, runs in samples.items()}
    agg = {a["ranks"]: a for a in S.aggregate(member_rows(samples), kind)}
    out = []
    for ranks, r in sorted(medians.items()):
        r = dict(r, speedup=agg[ranks]["speedup"], efficiency=agg[ranks]["efficiency"],
                 spread_s=statistics.pstdev([x["run_s"] for x in samples[ranks]]), samples=len(samples[ranks]))
        out.append(r)
    return out


def _folder(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "CPU ?"
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "CPU ?")


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
    rows: dict[str, list[dict]] = {}
    plots: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("strong", "weak"):
            samples: dict[int, list[dict]] = {1: [], 2: []}
            for rep in range(repeats):  # interleave 1- and 2-rank runs so machine noise hits both
                for ranks in (1, 2):
                    n = n_strong if kind == "strong" else per_rank_weak * ranks
                    samples[ranks].append(run(ranks, n, duration, Path(tmp) / f"{kind}{ranks}_{rep}"))
            rows[kind] = summarise(samples, kind)
            agg = S.aggregate(member_rows(samples), kind)
            meta = S.figure_meta(member_rows(samples), agg, site=f"local ({_cpu_model()})", scaling=kind,
                                 statistic=f"median of {repeats}")
            plots += S.plot(agg, _folder(RESULTS / f"scaling-{kind}"), kind, meta=meta)
    print(f"\nCOBAHH scaling, exp-Euler dt 0.1 ms, delay 1 ms, {duration:g} ms, alltoall exchange, median of {repeats}"
          "\n(weak scaling: scaled speedup = ranks x t1 / tN, efficiency = t1 / tN; cluster_sim.analysis.scaling)\n")
    print("| scaling | ranks | neurons | synapses | run s | speedup | efficiency | exchange+wait % | integrate | wait | exchange | deliver | io | load balance |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, rs in rows.items():
        for r in rs:
            comm = 100 * (r["phases"]["exchange"] + r["phases"]["wait"]) / r["run_s"]
            r["comm_share"] = comm
            ph = r["phases"]
            print(f"| {kind} | {r['ranks']} | {r['neurons']} | {r['synapses']} | {r['run_s']:.2f} | {r['speedup']:.2f} | "
                  f"{r['efficiency']:.2f} | {comm:.1f} | {ph['integrate']:.2f} | {ph['wait']:.2f} | {ph['exchange']:.2f} | "
                  f"{ph['deliver']:.2f} | {ph['io']:.2f} | {r['load_balance']:.3f} |")
    (_folder(RESULTS) / "scaling.json").write_text(json.dumps(rows, indent=2))
    print(f"\nwritten {RESULTS / 'scaling.json'} and " + ", ".join(str(p.relative_to(ROOT)) for p in plots))
    exchange_table(n_strong, duration)


def exchange_table(n_total: int, duration_ms: float) -> None:
    """ms per exchange and share of the run phase for each backend on 2 ranks (horovod only
    where it is installed: scripts/build_horovod.sh)."""
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


if __name__ == "__main__":
    main()
