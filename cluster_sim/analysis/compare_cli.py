"""``cluster-sim compare``: one job in BSP (RK4, exponential Euler) and async mode against a
tight reference; cost and accuracy side by side (``cluster_sim.analysis.compare``).

Registered by ``cluster_sim.cli.build_parser`` through :func:`register`. Importing this module
is cheap (argparse only): the comparison code loads when the command runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster_sim.errors import ConfigError

MODES = ("bsp_rk4", "bsp_exp_euler", "async")  # = compare.MODES (kept here so registering imports nothing heavy)

USAGE_EXAMPLES = """examples:
  cluster-sim compare jobs/cobahh.toml --out runs/cmp --duration 200
  cluster-sim compare jobs/cobahh.toml --out runs/cmp --duration 200 --mode-set bsp_rk4:integrator.dt_ms=0.01
  cluster-sim compare jobs/cobahh_poisson.toml --out runs/sw --sweep populations.ext.params.rate_hz=2,5,10,20
  cluster-sim compare JOB --out DIR --reference bsp        # reference: BSP RK4 at dt/20 instead of async rtol 1e-9
"""


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser(
        "compare", help="BSP (RK4, exp. Euler) vs async on one job: steps, wall time, spike-time error",
        description="Run one job spec as separate `cluster-sim run` processes in BSP RK4, BSP exponential Euler and "
                    "async mode plus a tight reference (async at rtol = atol = 1e-9, or BSP RK4 at dt/20), and compare "
                    "cost (steps and RHS evaluations per neuron, wall time by phase) and accuracy (spike-time error, "
                    "rates, ISI CV). Writes OUT/<mode>/ (each a normal run folder), OUT/compare.json, OUT/compare.md "
                    "and OUT/compare.png; with --sweep, one such folder per value plus OUT/sweep.{json,md,png}. "
                    "Exit status: 0 done, 2 bad input (nothing run), 1 a sub-run failed.",
        epilog=USAGE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", help="job spec (TOML)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key in every sub-run (repeatable), as for `cluster-sim run`")
    p.add_argument("--duration", type=float, metavar="MS", help="simulated time in ms (= --set simulation.duration_ms=MS)")
    p.add_argument("--ranks", type=int, default=1, metavar="N", help="MPI ranks per sub-run (mpiexec -n N); default 1")
    p.add_argument("--reference", default="async", metavar="async|bsp",
                   help="reference run: async at rtol = atol = --reference-rtol (default), or bsp = RK4 at dt/20")
    p.add_argument("--reference-rtol", type=float, default=1e-9, metavar="TOL", help="rtol and atol of the async reference (1e-9)")
    p.add_argument("--modes", default=",".join(MODES), metavar="LIST",
                   help=f"comma-separated modes to compare (default {','.join(MODES)})")
    p.add_argument("--mode-set", dest="mode_overrides", action="append", default=[], metavar="LABEL:KEY=VALUE",
                   help="override a spec key in one sub-run only, e.g. bsp_rk4:integrator.dt_ms=0.01 (repeatable; "
                        "LABEL is a mode or 'reference')")
    p.add_argument("--tolerance", type=float, default=1.0, metavar="MS", help="spike-matching window in ms (1.0)")
    p.add_argument("--sweep", metavar="KEY=V1,V2,...", help="repeat the comparison for each value of one spec key, "
                   "e.g. populations.ext.params.rate_hz=2,5,10,20")
    p.add_argument("--no-recordings", dest="keep_recordings", action="store_false",
                   help="drop the spec's [recordings] from every sub-run (kept by default: both modes record them)")
    p.add_argument("--timeout", type=float, metavar="S", help="give up on a sub-run after S seconds")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines (the table is still printed)")
    p.set_defaults(func=cmd_compare)


def parse_mode_overrides(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        label, sep, rest = item.partition(":")
        if not sep or not label.strip() or "=" not in rest:
            raise ConfigError("--mode-set", item, "must look like LABEL:KEY=VALUE",
                              "e.g. --mode-set bsp_rk4:integrator.dt_ms=0.01")
        out.setdefault(label.strip(), []).append(rest.strip())
    return out


def parse_sweep(text: str) -> tuple[str, list[str]]:
    key, sep, vals = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError("--sweep", text, "must look like KEY=V1,V2,...", "e.g. --sweep populations.ext.params.rate_hz=2,5,10")
    values = [v.strip() for v in vals.split(",") if v.strip()]
    if not values:
        raise ConfigError("--sweep", text, f"key {key} has no values", f"e.g. --sweep {key}=2,5,10")
    return key, values


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes:
        raise ConfigError("--modes", text, "no mode given", f"use any of: {', '.join(MODES)}")
    return modes


def cmd_compare(args: argparse.Namespace) -> int:
    # every argument is parsed and checked (the sub-runs' specs included) before any run starts
    mode_overrides = parse_mode_overrides(args.mode_overrides)
    modes = parse_modes(args.modes)
    common = dict(overrides=args.overrides, duration_ms=args.duration, ranks=args.ranks, reference=args.reference,
                  reference_rtol=args.reference_rtol, modes=modes, mode_overrides=mode_overrides,
                  tolerance_ms=args.tolerance, timeout_s=args.timeout,
                  keep_recordings=args.keep_recordings, quiet=args.quiet)
    from cluster_sim.analysis import compare as cmp

    out = Path(args.out)
    if args.sweep is not None:
        key, values = parse_sweep(args.sweep)
        cmp.sweep(args.job, out, key, values, **common)
        print((out / "sweep.md").read_text())
        print(f"results: {out}/sweep.json, {out}/sweep.md, {out}/sweep.png", file=sys.stderr)
    else:
        cmp.compare(args.job, out, **common)
        print((out / "compare.md").read_text())
        print(f"results: {out}/compare.json, {out}/compare.md, {out}/compare.png", file=sys.stderr)
    return 0
