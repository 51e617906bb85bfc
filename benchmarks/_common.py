"""Shared helpers for the benchmarks: fresh-subprocess workers, interleaved repetitions,
medians, Markdown tables, JSON results and plots.

Every benchmark script has two roles:

* parent (``python benchmarks/NAME.py [--quick]``): builds a list of configurations and runs
  each one ``reps`` times in a *fresh* Python subprocess, interleaving the repetitions
  (config A, B, C, A, B, C, ...) so that background load on the (2-core, shared) machine
  affects all configurations alike. It then prints medians and ratios.
* worker (``python benchmarks/NAME.py --worker '<json>'``): runs one configuration and prints
  one line ``RESULT <json>``; it reports its own peak RSS (``ru_maxrss`` of itself and of its
  waited-for children, e.g. Brian2's standalone binary).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
JOBS = ROOT / "jobs"


# -- worker side ------------------------------------------------------------------------------

def single_thread_env() -> None:
    """Pin BLAS/OpenMP pools to one thread (Brian2 and NumPy runs are single-threaded)."""
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(k, "1")


def peak_rss_mb() -> dict[str, float]:
    """Peak resident set size (MB) of this process and of its largest waited-for child."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"rss_self_mb": self_kb / 1024.0, "rss_child_mb": child_kb / 1024.0,
            "rss_mb": max(self_kb, child_kb) / 1024.0}


def emit(result: dict[str, Any]) -> None:
    result.update(peak_rss_mb())
    print("RESULT " + json.dumps(result), flush=True)


def worker_main(handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> bool:
    """If argv is ``--worker <json>``, run ``handlers[cfg['impl']](cfg)``, emit, return True."""
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        cfg = json.loads(sys.argv[2])
        out = handlers[cfg["impl"]](cfg)
        out.setdefault("cfg", cfg)
        emit(out)
        return True
    return False


# -- parent side ------------------------------------------------------------------------------

def run_worker(script: Path, cfg: dict[str, Any], timeout: float = 1800.0) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter; returns its RESULT dict (plus wall_total_s)
    or {"error": ...}."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = str(BENCH) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    try:
        p = subprocess.run([cfg.get("python") or sys.executable, str(script), "--worker", json.dumps(cfg)], capture_output=True,
                           text=True, timeout=timeout, cwd=str(ROOT), env=env)
    except subprocess.TimeoutExpired:
        return {"cfg": cfg, "error": f"timeout after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
            res["wall_total_s"] = wall
            return res
    tail = (p.stdout[-1500:] + "\n" + p.stderr[-3000:]).strip()
    return {"cfg": cfg, "error": f"exit {p.returncode}: {tail}"}


def brian2_python() -> str:
    """Interpreter for the Brian2 workers: $BRIAN2_PYTHON, else this one if Brian2 imports in it,
    else /tmp/b2venv/bin/python (Brian2 2.9.0 fails to import with NumPy >= 2.4, which removed
    ndarray.ptp; make it with ``python -m venv --system-site-packages /tmp/b2venv &&
    /tmp/b2venv/bin/pip install "numpy<2.4" brian2``)."""
    if os.environ.get("BRIAN2_PYTHON"):
        return os.environ["BRIAN2_PYTHON"]
    ok = subprocess.run([sys.executable, "-c", "import brian2"], capture_output=True).returncode == 0
    if ok:
        return sys.executable
    return "/tmp/b2venv/bin/python"


def interleaved(script: Path, configs: Sequence[dict[str, Any]], reps: int, label: Callable[[dict], str],
                timeout: float = 1800.0) -> dict[str, list[dict[str, Any]]]:
    """Run every config ``reps`` times, round-robin, each in a fresh subprocess."""
    out: dict[str, list[dict[str, Any]]] = {label(c): [] for c in configs}
    for r in range(reps):
        for c in configs:
            key = label(c)
            t0 = time.perf_counter()
            res = run_worker(script, c, timeout)
            msg = res.get("error", "ok")
            print(f"  [rep {r + 1}/{reps}] {key}: {time.perf_counter() - t0:6.1f} s  {msg[-800:] if msg != 'ok' else ''}",
                  file=sys.stderr, flush=True)
            out[key].append(res)
    return out


def med(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def med_of(results: list[dict[str, Any]], key: str) -> float | None:
    return med(r.get(key) for r in results if "error" not in r)


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) >= 100:
            return f"{x:.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(x) for x in r) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count(), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cluster_sim_code"] = code_digest()
    try:
        load = os.getloadavg()
        info["loadavg"] = [round(x, 2) for x in load]
    except OSError:
        pass
    return info


def code_digest() -> dict[str, Any]:
    """Which simulator code was measured: HEAD commit (read-only) and a hash of the working
    tree's cluster_sim/**/*.py (the simulator was being edited while benchmarks ran)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((ROOT / "cluster_sim").rglob("*.py")):
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    head = None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    return {"head": head, "cluster_sim_py_sha256": h.hexdigest()[:16]}


def save(name: str, payload: dict[str, Any], quick: bool) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (f"{name}_quick.json" if quick else f"{name}.json")
    payload = {"benchmark": name, "quick": quick, "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def plot_path(name: str, quick: bool) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / (f"{name}_quick.png" if quick else f"{name}.png")


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401

        matplotlib.use("Agg")
        return True
    except Exception:
        return False


def cluster_sim_spec(job: str, overrides: Sequence[str]) -> Any:
    """Load a job spec (no TensorFlow import)."""
    from cluster_sim.spec import load_spec

    return load_spec(JOBS / job, list(overrides))


def cobahh_overrides(n: int, duration_ms: float, precision: str = "float64", extra: Sequence[str] = ()) -> list[str]:
    """COBAHH with N neurons (80 % E / 20 % I), p = 0.02 and the original weights kept."""
    ne = int(round(0.8 * n))
    return [f"populations.E.count={ne}", f"populations.I.count={n - ne}", f"simulation.duration_ms={duration_ms}",
            f"integrator.precision=\"{precision}\"", *extra]


def run_cluster_sim(job: str, overrides: Sequence[str], out_dir: str | None = None,
                    cpu_threads: int | None = None) -> dict[str, Any]:
    """simulate() in this process (call from a worker); returns run.json plus derived numbers."""
    import tempfile

    t_start = time.perf_counter()
    from cluster_sim.runtime.device import prepare_environment

    spec = cluster_sim_spec(job, overrides)
    prepare_environment()
    from cluster_sim.run import simulate

    tmp = tempfile.TemporaryDirectory(prefix="bench_cs_")
    kw = {"cpu_threads": cpu_threads} if cpu_threads else {}
    res = simulate(spec, out_dir or tmp.name, progress=False, startup_s=0.0, **kw)
    total = time.perf_counter() - t_start
    info = res.info
    ph = info["phases"]
    # run phase = integrate + exchange + deliver + io (+ "wait", where the engine reports it)
    run_s = sum(v for k, v in ph.items() if k not in ("startup", "build", "checkpoint"))
    out = {"run_s": run_s, "startup_s": ph["startup"], "build_s": ph["build"], "phases": ph,
           "n_spikes": info["n_spikes"], "n_neurons": info["n_neurons"], "n_synapses": info["n_synapses"],
           "rate_hz": info["n_spikes"] / (info["n_neurons"] * info["simulated_ms"] * 1e-3),
           "rates_hz": info["rates_hz"], "simulated_ms": info["simulated_ms"], "in_process_total_s": total,
           "synapse_events": info.get("synapse_events")}
    tmp.cleanup()
    return out
