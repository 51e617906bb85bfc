"""BSP vs async on one job: cost (steps and right-hand-side evaluations per neuron, wall time
and its phases) and accuracy (spike times, rates, ISI CV) against a tight reference.

:func:`compare` runs the same job spec (same ``--set`` overrides) as separate
``cluster-sim run`` processes, one per mode, into ``out/<label>/``:

==================  ==========================================================================
``bsp_rk4``         ``--mode bsp --set integrator.method="rk4"`` at the spec's dt
``bsp_exp_euler``   ``--mode bsp --set integrator.method="exp_euler"`` at the spec's dt
``async``           ``--mode async`` at the spec's ``integrator.rtol`` / ``atol``
``reference``       ``--mode async`` at rtol = atol = ``reference_rtol`` (1e-9), or with
                    ``reference="bsp"``: ``--mode bsp``, RK4 at dt / 20
==================  ==========================================================================

Extra per-mode overrides (``mode_overrides={"bsp_rk4": ["integrator.dt_ms=0.01"]}``) change one
mode only, e.g. to compare against RK4 at a finer step than the spec's. It then writes
``out/compare.json``, ``out/compare.md`` (one table row per mode) and ``out/compare.png``.
:func:`sweep` repeats :func:`compare` over the values of one spec key (e.g. the input rate
``populations.ext.params.rate_hz``) and writes ``out/sweep.{json,md,png}``.

Every input is checked (the job spec of every sub-run included) before any compute:
bad input raises :class:`~cluster_sim.errors.ConfigError`; a sub-run that fails raises
:class:`~cluster_sim.errors.RunError` with its command and the tail of its stderr.

Spike-source populations (e.g. Poisson inputs) are reported per population but left out of the
aggregated accuracy numbers: their spikes are drawn, not integrated, and would match trivially.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cluster_sim.deploy import local
from cluster_sim.errors import ConfigError, RunError

MODES = ("bsp_rk4", "bsp_exp_euler", "async")
REFERENCE = "reference"
REFERENCES = ("async", "bsp")
RHS_PER_STEP = {"rk4": 4, "exp_euler": 1, "euler": 1}
RUN_PHASES = ("integrate", "wait", "exchange", "deliver", "io")  # the simulation proper
REFERENCE_DT_DIVISOR = 20
_TAIL_CHARS = 3000


# -- planning (all validation happens here, before any compute) ------------------------------

@dataclass(frozen=True)
class SubRun:
    """One ``cluster-sim run`` of a comparison."""

    label: str
    mode: str  # "bsp" | "async"
    overrides: tuple[str, ...]  # every --set, the user's first (later ones win)
    method: str  # integrator method of a BSP run ("" for async)
    dt_ms: float
    rtol: float
    atol: float


@dataclass(frozen=True)
class Plan:
    job: Path
    out: Path
    ranks: int
    tolerance_ms: float
    reference: str
    reference_rtol: float
    modes: tuple[str, ...]
    runs: tuple[SubRun, ...]  # the reference first
    duration_ms: float
    populations: dict[str, dict[str, Any]] = field(default_factory=dict)
    user_overrides: tuple[str, ...] = ()
    timeout_s: float | None = None


def _num(v: float) -> str:
    """A float as a TOML literal that round-trips (never '1e-09' without a dot issue)."""
    text = repr(float(v))
    return text if any(c in text for c in ".en") else text + ".0"


def _spec(job: Path, overrides: Sequence[str], what: str) -> Any:
    from cluster_sim.spec import load_spec

    try:
        return load_spec(job, list(overrides))
    except ConfigError as e:
        if what:
            raise type(e)(e.key, e.value, f"{e.problem} [in the {what} run]", e.fix) from e
        raise


def _is_source(model_name: str) -> bool:
    try:
        from cluster_sim.models import get_neuron_model

        return bool(getattr(get_neuron_model(model_name), "is_source", False))
    except KeyError:
        return False


def plan(job: str | Path, out: str | Path, *, overrides: Sequence[str] = (), duration_ms: float | None = None,
         ranks: int = 1, reference: str = "async", reference_rtol: float = 1e-9, modes: Sequence[str] = MODES,
         mode_overrides: Mapping[str, Sequence[str]] | None = None, tolerance_ms: float = 1.0,
         timeout_s: float | None = None, keep_recordings: bool = True) -> Plan:
    """Validate every input of a comparison and return what would be run. Raises ConfigError.
    The spec's ``[recordings]`` are kept in every sub-run (both modes record them on the same
    grid) unless ``keep_recordings`` is False."""
    job = Path(job)
    out = Path(out)
    if not job.is_file():
        raise ConfigError("JOB", str(job), "does not exist or is not a file", "give the path of a .toml job spec")
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ConfigError("--ranks", ranks, "must be an integer >= 1", "e.g. --ranks 2 (launched with mpiexec)")
    if reference not in REFERENCES:
        raise ConfigError("--reference", reference, "unknown reference", f"use one of: {', '.join(REFERENCES)}")
    if not (isinstance(reference_rtol, (int, float)) and 0 < reference_rtol <= 1e-3):
        raise ConfigError("reference_rtol", reference_rtol, "must be in (0, 1e-3]", "use e.g. 1e-9")
    if not (isinstance(tolerance_ms, (int, float)) and math.isfinite(tolerance_ms) and tolerance_ms > 0):
        raise ConfigError("--tolerance", tolerance_ms, "must be a spike-matching window > 0 ms", "use e.g. 1.0")
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError("timeout_s", timeout_s, "must be > 0 seconds", "or None for no limit")
    modes = tuple(modes)
    if not modes:
        raise ConfigError("--modes", "", "no mode given", f"use any of: {', '.join(MODES)}")
    for m in modes:
        if m not in MODES:
            raise ConfigError("--modes", m, "unknown mode", f"use any of: {', '.join(MODES)}")
    if len(set(modes)) != len(modes):
        raise ConfigError("--modes", ",".join(modes), "lists a mode twice", "give each mode once")
    mode_overrides = {k: tuple(v) for k, v in (mode_overrides or {}).items()}
    for label, extra in mode_overrides.items():
        if label not in (*modes, REFERENCE):
            raise ConfigError("--mode-set", label, "is not a mode of this comparison",
                              f"use one of: {', '.join((*modes, REFERENCE))}")
        for item in extra:
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError("--mode-set", f"{label}:{item}", "must look like LABEL:KEY=VALUE",
                                  "e.g. --mode-set bsp_rk4:integrator.dt_ms=0.01")
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", str(out), "exists and is not a folder", "choose a folder for the results")
    if ranks > 1:
        local.find_mpiexec()  # raises ConfigError when there is none

    user = [str(o) for o in overrides]
    if duration_ms is not None:
        if not (isinstance(duration_ms, (int, float)) and math.isfinite(duration_ms) and duration_ms > 0):
            raise ConfigError("--duration", duration_ms, "must be > 0 ms", "e.g. --duration 200")
        user.append(f"simulation.duration_ms={_num(duration_ms)}")
    base = _spec(job, user, "")  # the job itself, with the user's overrides
    if base.recordings and not keep_recordings:
        user.append("recordings={}")
    dt = float(base.integrator.dt_ms)

    wanted: list[tuple[str, str, list[str]]] = []  # label, mode, own overrides
    if reference == "async":
        wanted.append((REFERENCE, "async", [f"integrator.rtol={_num(reference_rtol)}", f"integrator.atol={_num(reference_rtol)}"]))
    else:
        wanted.append((REFERENCE, "bsp", ['integrator.method="rk4"', f"integrator.dt_ms={_num(float(f'{dt / REFERENCE_DT_DIVISOR:.12g}'))}"]))
    own = {"bsp_rk4": ("bsp", ['integrator.method="rk4"']), "bsp_exp_euler": ("bsp", ['integrator.method="exp_euler"']),
           "async": ("async", [])}
    # after the reference, async first: the mode most likely to fail, so a failure costs least
    order = [m for m in ("async", "bsp_rk4", "bsp_exp_euler") if m in modes]
    for m in order:
        wanted.append((m, *own[m]))

    from cluster_sim.run.check import check

    runs = []
    for label, mode, mine in wanted:
        ovr = tuple(user + mine + list(mode_overrides.get(label, ())))
        spec = _spec(job, [*ovr, f'simulation.mode="{mode}"'], label)
        try:
            check(spec, ranks)  # what the mode refuses (graded synapses in async, a partition that cuts, ...)
        except ConfigError as e:
            raise type(e)(e.key, e.value, f"{e.problem} [in the {label} run]", e.fix) from e
        runs.append(SubRun(label, mode, ovr, spec.integrator.method if mode == "bsp" else "", float(spec.integrator.dt_ms),
                           float(spec.integrator.rtol), float(spec.integrator.atol)))
    pops = {p.name: {"model": p.model, "count": int(p.count), "source": _is_source(p.model)} for p in base.populations}
    return Plan(job=job.resolve(), out=out.resolve(), ranks=ranks, tolerance_ms=float(tolerance_ms), reference=reference,
                reference_rtol=float(reference_rtol), modes=modes, runs=tuple(runs),
                duration_ms=float(base.simulation.duration_ms), populations=pops, user_overrides=tuple(user),
                timeout_s=timeout_s)


# -- running ----------------------------------------------------------------------------------

def _cli_args(p: Plan, run: SubRun, run_dir: Path) -> list[str]:
    args = ["run", str(p.job), "--out", str(run_dir), "--overwrite", "-q", "--mode", run.mode]
    for o in run.overrides:
        args += ["--set", o]
    return args


def command(p: Plan, run: SubRun, run_dir: Path) -> list[str]:
    """The exact command line of one sub-run."""
    return local.cli_command(p.ranks, _cli_args(p, run, run_dir))


def _stderr_tail(text: str) -> str:
    noise = ("WARNING: All log messages before absl::InitializeLog()", "oneDNN custom operations are on")
    lines = [ln for ln in text.splitlines() if not any(n in ln for n in noise)]
    return "\n".join(lines)[-_TAIL_CHARS:]


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[compare] {msg}", file=sys.stderr, flush=True)


def _execute_run(p: Plan, run: SubRun, run_dir: Path, quiet: bool) -> tuple[dict[str, Any], float]:
    cmd = command(p, run, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stale = run_dir / "run.json"
    if stale.exists():
        stale.unlink()
    what = f"{run.label} ({run.mode}" + (f", {run.method} dt {run.dt_ms:g} ms" if run.mode == "bsp" else
                                          f", rtol {run.rtol:g} atol {run.atol:g}") + (f", {p.ranks} ranks" if p.ranks > 1 else "") + ")"
    _log(f"{what}: started", quiet)
    t0 = time.perf_counter()
    try:
        proc = local.run_command(cmd, timeout_s=p.timeout_s,
                             env={"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")})
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise RunError(f"sub-run {run.label} timed out after {p.timeout_s:g} s: {shlex.join(cmd)}\n{_stderr_tail(err)}") from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        _log(f"{what}: FAILED (exit {proc.returncode}) after {wall:.1f} s", quiet)
        raise RunError(f"sub-run {run.label} exited {proc.returncode}: {shlex.join(cmd)}\n{_stderr_tail(proc.stderr)}")
    if not stale.exists():
        raise RunError(f"sub-run {run.label} wrote no run.json: {shlex.join(cmd)}\n{_stderr_tail(proc.stderr)}")
    info = json.loads(stale.read_text())
    _log(f"{what}: finished in {wall:.1f} s ({info.get('n_spikes', '?')} spikes)", quiet)
    return info, wall


# -- measuring --------------------------------------------------------------------------------

def _f(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _spikes(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    from cluster_sim.analysis.reader import open_spikes

    out = {}
    with open_spikes(run_dir) as pops:
        for pop, (ts, ids, n) in pops.items():
            out[pop] = (np.asarray(ts.compute(), np.float64), np.asarray(ids.compute()).astype(np.int64), int(n))
    return out


def _cost(run: SubRun, info: Mapping[str, Any], process_s: float) -> dict[str, Any]:
    phases = {k: _f(v) for k, v in (info.get("phases") or {}).items()}
    steps = _f(info.get("steps_per_neuron"))
    rhs = info.get("rhs_evals_per_neuron")
    if rhs is None and run.mode == "bsp":  # older BSP run.json: steps × stages of the method
        rhs = steps * RHS_PER_STEP.get(str(info.get("method") or run.method), float("nan"))
    run_s = sum(phases.get(k, 0.0) for k in RUN_PHASES)
    out = {
        "steps_per_neuron": steps,
        "rhs_evals_per_neuron": _f(rhs),
        "wall_s": _f(info.get("wall_seconds")),
        "process_s": process_s,
        "run_s": run_s,
        "startup_s": phases.get("startup", 0.0),
        "build_s": phases.get("build", 0.0),
        "integrate_s": phases.get("integrate", 0.0),
        "communicate_s": phases.get("exchange", 0.0) + phases.get("deliver", 0.0),
        "wait_s": phases.get("wait", 0.0),
        "phases": phases,
        "n_spikes": int(info.get("n_spikes", 0) or 0),
        "simulated_ms": _f(info.get("simulated_ms")),
        "ranks": info.get("ranks"),
        "run_mode": info.get("mode", run.mode),
    }
    for k in ("rejected_steps_per_neuron", "restarts_per_neuron"):
        if k in info:
            out[k] = _f(info[k])
    return out


def _activity(run_dir: Path, spikes: Mapping[str, tuple[np.ndarray, np.ndarray, int]], pops: Mapping[str, dict[str, Any]],
              simulated_ms: float) -> dict[str, Any]:
    from cluster_sim.analysis.stats import isi_stats, population_rates

    rates = population_rates(run_dir)
    by_pop: dict[str, dict[str, Any]] = {}
    n_spk = n_neur = 0
    cvs: list[np.ndarray] = []
    for pop, (ts, _, n) in spikes.items():
        cv = isi_stats(run_dir, pop)["cv"]
        finite = cv[np.isfinite(cv)]
        by_pop[pop] = {"n_spikes": int(ts.size), "rate_hz": float(rates.get(pop, float("nan"))),
                       "cv": float(finite.mean()) if finite.size else float("nan"),
                       "source": bool(pops.get(pop, {}).get("source", False))}
        if not by_pop[pop]["source"]:
            n_spk += int(ts.size)
            n_neur += int(pops.get(pop, {}).get("count", n))
            cvs.append(finite)
    allcv = np.concatenate(cvs) if cvs else np.zeros(0)
    rate = n_spk / (n_neur * simulated_ms * 1e-3) if n_neur and simulated_ms > 0 else float("nan")
    return {"rate_hz": rate, "cv": float(allcv.mean()) if allcv.size else float("nan"), "n_spikes_integrated": n_spk,
            "populations": by_pop}


def _errors(ref: Mapping[str, tuple[np.ndarray, np.ndarray, int]], mine: Mapping[str, tuple[np.ndarray, np.ndarray, int]],
            pops: Mapping[str, dict[str, Any]], tol: float) -> tuple[dict[str, Any], np.ndarray]:
    from cluster_sim.analysis.stats import match_spike_times

    empty = (np.zeros(0), np.zeros(0, np.int64), 0)
    by_pop: dict[str, dict[str, Any]] = {}
    n_ref = n_mine = matched = 0
    errs_all: list[np.ndarray] = []
    for pop in sorted(set(ref) | set(mine)):
        ta, ia, _ = ref.get(pop, empty)
        tb, ib, _ = mine.get(pop, empty)
        errs = match_spike_times(ta, ia, tb, ib, tol)
        by_pop[pop] = _error_stats(int(ta.size), int(tb.size), errs)
        if not pops.get(pop, {}).get("source", False):
            n_ref += int(ta.size)
            n_mine += int(tb.size)
            matched += int(errs.size)
            errs_all.append(errs)
    errs = np.concatenate(errs_all) if errs_all else np.zeros(0)
    total = _error_stats(n_ref, n_mine, errs)
    total["populations"] = by_pop
    return total, errs


def _error_stats(n_ref: int, n_mode: int, errs: np.ndarray) -> dict[str, Any]:
    denom = max(n_ref, n_mode)
    out: dict[str, Any] = {"n_ref": n_ref, "n_mode": n_mode, "matched": int(errs.size),
           "matched_fraction": errs.size / denom if denom else float("nan"),
           "mean_abs_error_ms": float(errs.mean()) if errs.size else float("nan"),
           "max_abs_error_ms": float(errs.max()) if errs.size else float("nan")}
    if errs.size:
        out["quantiles_ms"] = {f"p{q}": float(np.percentile(errs, q)) for q in (50, 90, 99)}
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if (math.isfinite(a) and math.isfinite(b) and b > 0) else float("nan")


# -- the comparison ---------------------------------------------------------------------------

def compare(job: str | Path, out: str | Path, *, overrides: Sequence[str] = (), duration_ms: float | None = None,
            ranks: int = 1, reference: str = "async", reference_rtol: float = 1e-9, modes: Sequence[str] = MODES,
            mode_overrides: Mapping[str, Sequence[str]] | None = None, tolerance_ms: float = 1.0,
            timeout_s: float | None = None, keep_recordings: bool = True, quiet: bool = False) -> dict[str, Any]:
    """Run ``job`` in every mode of ``modes`` and as the reference, compare, and write
    ``out/compare.{json,md,png}``. Returns the content of compare.json.

    ``overrides`` apply to every sub-run (``--set`` syntax); ``mode_overrides`` maps a label
    (``bsp_rk4``, ``bsp_exp_euler``, ``async``, ``reference``) to extra overrides for that
    sub-run only. ``reference`` is ``"async"`` (rtol = atol = ``reference_rtol``) or ``"bsp"``
    (RK4 at dt / 20). ``tolerance_ms`` is the spike-matching window. The spec's recordings are
    kept unless ``keep_recordings`` is False (then ``--set recordings={}``)."""
    p = plan(job, out, overrides=overrides, duration_ms=duration_ms, ranks=ranks, reference=reference,
             reference_rtol=reference_rtol, modes=modes, mode_overrides=mode_overrides, tolerance_ms=tolerance_ms,
             timeout_s=timeout_s, keep_recordings=keep_recordings)
    return execute(p, quiet=quiet)


def execute(p: Plan, *, quiet: bool = False, write: bool = True) -> dict[str, Any]:
    """Run a validated :class:`Plan` and write its outputs (see :func:`compare`)."""
    p.out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    errors_ms: dict[str, np.ndarray] = {}
    ref_spikes = None
    t_all = time.perf_counter()
    for run in p.runs:  # the reference first
        run_dir = p.out / run.label
        info, process_s = _execute_run(p, run, run_dir, quiet)
        cost = _cost(run, info, process_s)
        spikes = _spikes(run_dir)
        act = _activity(run_dir, spikes, p.populations, cost["simulated_ms"] if math.isfinite(cost["simulated_ms"]) else p.duration_ms)
        if ref_spikes is None:
            ref_spikes = spikes
        err, errs = _errors(ref_spikes, spikes, p.populations, p.tolerance_ms)
        errors_ms[run.label] = errs
        rows[run.label] = {"label": run.label, "mode": run.mode, "method": run.method, "dt_ms": run.dt_ms if run.mode == "bsp" else None,
                           "rtol": run.rtol if run.mode == "async" else None, "atol": run.atol if run.mode == "async" else None,
                           "dir": str(run_dir), "command": command(p, run, run_dir), **cost, **act, "errors": err}
    ref = rows[REFERENCE]
    base = rows.get("bsp_rk4")
    for r in rows.values():
        r["rate_rel_error"] = abs(r["rate_hz"] - ref["rate_hz"]) / ref["rate_hz"] if ref["rate_hz"] > 0 else float("nan")
        r["cv_diff"] = r["cv"] - ref["cv"]
        r["vs_bsp_rk4"] = {k: _ratio(r[f], base[f]) if base else float("nan") for k, f in
                           (("steps", "steps_per_neuron"), ("rhs_evals", "rhs_evals_per_neuron"), ("wall", "wall_s"), ("run", "run_s"))}
    order = [m for m in MODES if m in rows] + [REFERENCE]
    warnings = _source_warnings(rows, p.populations)
    for w in warnings:
        _log(f"WARNING: {w}", quiet)
    result = {
        "job": str(p.job), "out": str(p.out), "overrides": list(p.user_overrides), "ranks": p.ranks,
        "duration_ms": p.duration_ms, "tolerance_ms": p.tolerance_ms,
        "reference": {"kind": p.reference, "rtol": p.reference_rtol if p.reference == "async" else None,
                      "dt_ms": rows[REFERENCE]["dt_ms"]},
        "populations": p.populations, "order": order, "modes": {k: rows[k] for k in order},
        "warnings": warnings, "total_seconds": time.perf_counter() - t_all,
    }
    if write:
        from cluster_sim.analysis.compare_report import markdown, plot_compare, write_json, write_text

        write_json(p.out / "compare.json", result)
        write_text(p.out / "compare.md", markdown(result))
        plot_compare(result, errors_ms, p.out / "compare.png")
    return result


def _source_warnings(rows: Mapping[str, Mapping[str, Any]], pops: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Spike sources (e.g. Poisson inputs) are a pure function of (seed, population, neuron):
    every mode must emit exactly the reference's trains, or the modes simulated different inputs."""
    out = []
    for label, r in rows.items():
        for pop, d in pops.items():
            e = r["errors"]["populations"].get(pop)
            if not d.get("source") or e is None:
                continue
            same = e["n_ref"] == e["n_mode"] == e["matched"] and (e["matched"] == 0 or e["max_abs_error_ms"] <= 1e-9)
            if not same:
                out.append(f"spike source {pop!r} differs between {label} and the reference ({e['n_mode']} vs {e['n_ref']} "
                           f"spikes, {e['matched']} matched): the two runs did not get the same input, so their spike "
                           "times cannot agree")
    return out


# -- the input sweep --------------------------------------------------------------------------

def _value_literal(v: Any) -> str:
    if isinstance(v, bool):
        raise ConfigError("--sweep", v, "is not a number", "give numbers, e.g. --sweep KEY=1,2.5")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _num(v)
    text = str(v).strip()
    try:
        return str(int(text))
    except ValueError:
        pass
    try:
        return _num(float(text))
    except ValueError:
        raise ConfigError("--sweep", text, "is not a number", "give numbers, e.g. --sweep KEY=1,2.5") from None


def _value_name(lit: str) -> str:
    try:
        return f"{float(lit):g}"
    except ValueError:
        return lit


def sweep(job: str | Path, out: str | Path, key: str, values: Sequence[float | int | str], *, overrides: Sequence[str] = (),
          duration_ms: float | None = None, ranks: int = 1, reference: str = "async", reference_rtol: float = 1e-9,
          modes: Sequence[str] = MODES, mode_overrides: Mapping[str, Sequence[str]] | None = None,
          tolerance_ms: float = 1.0, timeout_s: float | None = None, keep_recordings: bool = True,
          quiet: bool = False) -> dict[str, Any]:
    """:func:`compare` once per value of ``key`` (as an extra ``--set key=value``) into
    ``out/<key>=<value>/``; writes ``out/sweep.{json,md,png}``. Every value's plan is checked
    before the first run."""
    key = str(key).strip()
    if not key or "=" in key or any(not part for part in key.split(".")):
        raise ConfigError("--sweep", key, "is not a dotted spec key", "write e.g. --sweep populations.ext.params.rate_hz=5,10,20")
    values = list(values)
    if not values:
        raise ConfigError("--sweep", key, "has no values", f"write e.g. --sweep {key}=5,10,20")
    lits = [_value_literal(v) for v in values]
    if len(set(lits)) != len(lits):
        raise ConfigError("--sweep", ",".join(lits), "lists a value twice", "give each value once")
    out = Path(out)
    plans = [plan(job, out / f"{key}={_value_name(lit)}", overrides=[*overrides, f"{key}={lit}"], duration_ms=duration_ms,
                  ranks=ranks, reference=reference, reference_rtol=reference_rtol, modes=modes, mode_overrides=mode_overrides,
                  tolerance_ms=tolerance_ms, timeout_s=timeout_s, keep_recordings=keep_recordings) for lit in lits]
    results = []
    for lit, pl in zip(lits, plans):
        _log(f"sweep {key} = {lit}", quiet)
        res = execute(pl, quiet=quiet)
        res["sweep_value"] = float(lit)
        results.append(res)
    rows = [_sweep_row(r) for r in results]
    summary = {"job": str(Path(job).resolve()), "key": key, "values": [float(x) for x in lits], "modes": list(plans[0].modes),
               "rows": rows, "crossover": sweep_crossovers(rows), "results": results}
    out.mkdir(parents=True, exist_ok=True)
    from cluster_sim.analysis.compare_report import plot_sweep, sweep_markdown, write_json, write_text

    write_json(out / "sweep.json", summary)
    write_text(out / "sweep.md", sweep_markdown(summary))
    plot_sweep(summary, out / "sweep.png")
    return summary


def crossover(values: Sequence[float], ratios: Sequence[float], *, log: bool = True) -> dict[str, Any]:
    """Where ``ratios`` (e.g. async / BSP RK4 run phase, one per swept value) first reaches 1 as
    the value grows, i.e. where async stops winning.

    The points are taken in increasing ``values``; non-finite ratios are skipped. Between the
    last point below 1 and the first at or above 1 the crossing is interpolated linearly in
    (log value, log ratio) when ``log`` and both values are > 0 (ratios of run times over input
    rates spanning decades), else linearly in (value, ratio). Returns a dict with ``status``:

    * ``"crosses"``: ``value`` is the interpolated crossing, ``below`` / ``above`` the measured
      values that bracket it (ratio < 1 at ``below``, >= 1 at ``above``); ``later_below`` lists
      larger values where the ratio dips below 1 again (noise, or a second crossing);
    * ``"never"``: every ratio < 1 (async wins at every value measured; ``below`` = the largest);
    * ``"from_start"``: the smallest value already has ratio >= 1 (``above`` = it; ``value`` None);
    * ``"no_data"``: no finite ratio.

    Only the first crossing is interpolated; later dips below 1 are listed, not interpolated.
    """
    pts = sorted((float(v), float(r)) for v, r in zip(values, ratios) if math.isfinite(float(v)) and math.isfinite(float(r)))
    out: dict[str, Any] = {"status": "no_data", "value": None, "below": None, "above": None, "later_below": []}
    if not pts:
        return out
    for i, (x1, r1) in enumerate(pts):
        if r1 < 1.0:
            continue
        if i == 0:
            return {**out, "status": "from_start", "above": x1, "later_below": [x for x, r in pts[1:] if r < 1.0]}
        x0, r0 = pts[i - 1]
        if log and x0 > 0 and x1 > 0 and r0 > 0:
            a0, a1, b0, b1 = math.log(x0), math.log(x1), math.log(r0), math.log(r1)
            value = math.exp(a0 + (a1 - a0) * (0.0 - b0) / (b1 - b0))
        else:
            value = x0 + (x1 - x0) * (1.0 - r0) / (r1 - r0)
        return {**out, "status": "crosses", "value": value, "below": x0, "above": x1,
                "later_below": [x for x, r in pts[i + 1:] if r < 1.0]}
    return {**out, "status": "never", "below": pts[-1][0]}


def sweep_crossovers(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`crossover` of the async / BSP RK4 ratios of a sweep's rows, for the run phase
    (startup excluded) and for wall time (startup included)."""
    xs = [float(r["value"]) for r in rows]
    return {k: crossover(xs, [_f(r["async_vs_rk4"].get(k)) for r in rows]) for k in ("run", "wall")}


def describe_crossover(c: Mapping[str, Any], what: str = "async / RK4 run phase", unit: str = "") -> str:
    """One sentence for a :func:`crossover` result."""
    u = f" {unit}" if unit else ""
    if c["status"] == "crosses":
        again = c.get("later_below") or []
        return (f"{what} reaches 1 at ≈ {c['value']:.3g}{u} (interpolated; < 1 at {c['below']:g}{u}, "
                f">= 1 at {c['above']:g}{u}): async stops winning there"
                + (f" (but < 1 again at {', '.join(f'{x:g}' for x in again)}{u})" if again else ""))
    if c["status"] == "never":
        return f"{what} stays < 1 up to {c['below']:g}{u}: async wins at every value measured (no crossover)"
    if c["status"] == "from_start":
        again = c.get("later_below") or []
        return (f"{what} is already >= 1 at the smallest value, {c['above']:g}{u}: "
                + (f"async wins only at {', '.join(f'{x:g}' for x in again)}{u}" if again else "async wins nowhere measured"))
    return f"{what}: no data"


def _sweep_row(res: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"value": res["sweep_value"], "reference_rate_hz": res["modes"][REFERENCE]["rate_hz"]}
    for label, m in res["modes"].items():
        row[label] = {"steps_per_neuron": m["steps_per_neuron"], "rhs_evals_per_neuron": m["rhs_evals_per_neuron"],
                      "wall_s": m["wall_s"], "run_s": m["run_s"], "max_abs_error_ms": m["errors"]["max_abs_error_ms"],
                      "matched_fraction": m["errors"]["matched_fraction"], "rate_hz": m["rate_hz"]}
    a, r = res["modes"].get("async"), res["modes"].get("bsp_rk4")
    row["async_vs_rk4"] = {k: _ratio(a[f], r[f]) if a and r else float("nan")
                           for k, f in (("steps", "steps_per_neuron"), ("wall", "wall_s"), ("run", "run_s"))}
    return row


# -- output -----------------------------------------------------------------------------------
