"""Sweep and study files: parsing, task expansion, submission layout, collection and plots."""
from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from cluster_sim.deploy import render as R
from cluster_sim.deploy.folder import SubmitOptions, write_json
from cluster_sim.deploy.runs import open_run
from cluster_sim.deploy.sites import load_site
from cluster_sim.analysis.scaling import aggregate
from cluster_sim.deploy.study import load_study, submit_study
from cluster_sim.deploy.sweep import load_sweep, submit_sweep
from cluster_sim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


# Fake job ids far above any the local test SLURM hands out: collect/status ask the real
# scontrol about them, and a real job with the same id would answer instead.
FAKE_ID0 = 60_000_000


class Counter:
    def __init__(self):
        self.n = FAKE_ID0
        self.calls = []

    def __call__(self, cmd):
        self.calls.append(list(cmd))
        if cmd[0] == "sbatch":
            self.n += 1
            return subprocess.CompletedProcess(cmd, 0, f"{self.n}\n", "")
        if cmd[0] == "sacct":
            return subprocess.CompletedProcess(cmd, 1, "", "Slurm accounting storage is disabled")
        return subprocess.CompletedProcess(cmd, 0, "", "")


def write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_product_and_zip(tmp_path, spec):
    p = write(tmp_path / "s.toml", f'job = "{spec.name}"\n[sweep]\n"a.x" = [1, 2, 3]\nb.y = ["p", "q"]\n')
    sw = load_sweep(p)
    assert len(sw.tasks()) == 6 and sw.tasks()[0] == [("a.x", "1"), ("b.y", "p")]
    p = write(tmp_path / "z.toml", f'job = "{spec.name}"\ncombine = "zip"\n[set]\n"c" = 1.5\n'
                                   f'[sweep]\n"a.x" = [1, 2]\n"b.y" = [true, false]\n')
    assert load_sweep(p).tasks() == [[("c", "1.5"), ("a.x", "1"), ("b.y", "true")],
                                     [("c", "1.5"), ("a.x", "2"), ("b.y", "false")]]


@pytest.mark.parametrize("text,match", [
    ('job = "J"\n[sweep]\n"a" = []\n', "non-empty list"),
    ('job = "J"\ncombine = "zip"\n[sweep]\n"a" = [1]\n"b" = [1, 2]\n', "different lengths"),
    ('job = "J"\nmax_paralel = 2\n[sweep]\n"a" = [1]\n', "valid keys in \\[top level\\] are: combine, job, max_parallel"),
    ('job = "J"\n', "at least one parameter"),
    ('[sweep]\n"a" = [1]\n', "job"),
    ('job = "J"\n[sweep]\n"a;b" = [1]\n', "dotted parameter key"),
    ('job = "J"\n[resources]\nnodez = 2\n[sweep]\n"a" = [1]\n', "unknown key"),
    ('job = "J"\n[sweep\n', "not valid TOML"),
])
def test_bad_sweep_files(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_sweep(write(tmp_path / "s.toml", text))


def test_sweep_submit_layout_and_collect(tmp_path, spec):
    p = write(tmp_path / "s.toml", f'job = "{spec.name}"\nmax_parallel = 2\n[resources]\ntime = "00:05:00"\n'
                                   f'[sweep]\n"stimuli.odor.amplitude_uA_cm2" = [5, 10, 15]\n')
    runner = Counter()
    opts = SubmitOptions(site=load_site("local"), resources=R.JobResources(), runs_dir=tmp_path / "runs",
                         validate=False)
    sub = submit_sweep(p, opts, runner=runner)
    rd = sub.run_dir
    assert "#SBATCH --array=0-2%2" in (rd / "job.sbatch").read_text()
    assert "#SBATCH --time=00:05:00" in (rd / "job.sbatch").read_text()
    tasks = json.loads((rd / "tasks.json").read_text())["tasks"]
    assert [t["set"] for t in tasks] == [[["stimuli.odor.amplitude_uA_cm2", v]] for v in ("5", "10", "15")]
    man = json.loads((rd / "manifest.json").read_text())
    assert [u["job"] for u in man["units"]] == [f"{FAKE_ID0 + 1}_{i}" for i in range(3)]
    # two tasks finished, one has no run.json
    for i in (0, 2):
        out = rd / "tasks" / str(i) / "out"
        out.mkdir(parents=True)
        write_json(out / "run.json", {"n_neurons": 10, "n_spikes": 5 * (i + 1), "simulated_ms": 100.0,
                                      "wall_seconds": 2.0, "ranks": 1, "mode": "bsp",
                                      "phases": {"integrate": 1.5, "deliver": 0.3}})
        (rd / "tasks" / str(i) / "exitcode").write_text("0 0 x\n")
    (rd / "tasks" / "1" / "exitcode").write_text("1 0 x\n")
    res = open_run(rd).collect()
    rows = list(csv.DictReader((res / "summary.csv").open()))
    assert [r["stimuli.odor.amplitude_uA_cm2"] for r in rows] == ["5", "10", "15"]
    assert [r["state"] for r in rows] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert rows[2]["n_spikes"] == "15" and float(rows[0]["phase_integrate"]) == 1.5
    assert float(rows[0]["real_time_factor"]) == pytest.approx(20.0)


def test_cli_overrides_sweep_resources(tmp_path, spec):
    from cluster_sim.deploy.sweep import resources_from

    base = R.JobResources(time="00:02:00")
    assert resources_from((("time", "00:05:00"),), base, {"time"}).time == "00:02:00"
    assert resources_from((("time", "00:05:00"),), base, set()).time == "00:05:00"


def test_example_files_parse():
    assert len(load_sweep(ROOT / "studies" / "al_amplitude_sweep.toml").tasks()) == 6
    st = load_study(ROOT / "studies" / "strong.toml")
    assert len(st.members()) == 4 * 1 * 3  # nodes × modes (bsp) × seeds
    w = load_study(ROOT / "studies" / "weak.toml")
    m = [x for x in w.members() if x.nodes == 4][0]
    assert ("populations.E.count", str(3200 * 8)) in m.sets and ("simulation.seed", "1") in m.sets


def test_study_submit_chain_and_collect_job(tmp_path, spec):
    p = write(tmp_path / "st.toml", f'name = "st"\njob = "{spec.name}"\nnodes = [1]\nranks_per_node = [1, 2]\n'
                                    f'modes = ["bsp", "async"]\nseeds = [1]\nseed_key = "simulation.seed"\n'
                                    f'time = "00:05:00"\n')
    runner = Counter()
    opts = SubmitOptions(site=load_site("local"), resources=R.JobResources(), runs_dir=tmp_path / "runs",
                         validate=False)
    sub = submit_study(p, opts, runner=runner)
    man = json.loads((sub.run_dir / "manifest.json").read_text())
    assert [j["role"] for j in man["jobs"]] == ["member"] * 4 + ["collect"]
    scripts = [(sub.run_dir / j["script"]).read_text() for j in man["jobs"]]
    assert "--dependency" not in scripts[0]
    j = [str(FAKE_ID0 + i) for i in range(1, 5)]
    assert f"#SBATCH --dependency=afterany:{j[0]}" in scripts[1] and f"#SBATCH --dependency=afterany:{j[2]}" in scripts[3]
    assert f"#SBATCH --dependency=afterany:{':'.join(j)}" in scripts[4]
    assert "--mode async" in scripts[1] and "--set simulation.seed=1" in scripts[0]
    assert "--ntasks-per-node=2" in scripts[2]
    assert " collect \"$RUN_DIR\"" in scripts[4] and "--no-requeue" in scripts[4]


@pytest.mark.parametrize("text,match", [
    ('job = "J"\nscaling = "diagonal"\n', "strong"),
    ('job = "J"\nscaling = "weak"\n', "weak scaling needs"),
    ('job = "J"\nmodes = ["bsp", "sync"]\n', "modes"),
    ('job = "J"\nnodes = [0]\n', "nodes"),
    ('job = "J"\nseeds = [1]\n', "seed_key"),
    ('job = "J"\nnode = [1]\n', "valid keys"),
])
def test_bad_study_files(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_study(write(tmp_path / "s.toml", text))


def test_aggregate_and_plots(tmp_path):
    from cluster_sim.analysis.scaling import plot

    rows = []
    for ranks, wall in ((1, 8.0), (2, 4.4), (4, 2.5)):
        for seed, jitter in ((1, -0.1), (2, 0.1)):
            rows.append({"member": f"n1r{ranks}-bsp-s{seed}", "nodes": 1, "ranks_per_node": ranks, "mode": "bsp",
                         "state": "COMPLETED", "wall_seconds": wall + jitter, "simulated_ms": 1000.0,
                         "phase_integrate": 0.8 * wall, "phase_deliver": 0.2 * wall,
                         "construction_s": 1.0, "propagation_s": wall - 1.0})
    rows.append({"member": "x", "nodes": 1, "ranks_per_node": 8, "mode": "bsp", "state": "FAILED", "wall_seconds": ""})
    agg = aggregate(rows, "strong")
    assert [a["ranks"] for a in agg] == [1, 2, 4]
    assert agg[1]["speedup"] == pytest.approx(8.0 / 4.4)
    assert agg[2]["efficiency"] == pytest.approx(8.0 / (4 * 2.5))
    assert agg[0]["wall_std_s"] == pytest.approx(0.1414, rel=1e-3)
    assert agg[0]["real_time_factor"] == pytest.approx(8.0)
    assert agg[0]["rtf_integrate"] == pytest.approx(6.4)
    assert agg[2]["speedup_propagation"] == pytest.approx(7.0 / 1.5)
    assert agg[2]["efficiency_propagation"] == pytest.approx(7.0 / (4 * 1.5))
    assert agg[1]["construction_mean_s"] == pytest.approx(1.0)
    weak = aggregate(rows, "weak")
    assert weak[2]["efficiency"] == pytest.approx(8.0 / 2.5)
    pngs = plot(agg, tmp_path, "strong")
    assert {p.name for p in pngs} == {"wall_time.png", "speedup.png", "efficiency.png", "rtf_phases.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_study_dry_run_prints_what_submit_writes(tmp_path, spec):
    """The dry run shows every member with its dependency line and the collect job; a real submit
    writes the same scripts with real job ids in those places."""
    st = write(tmp_path / "study.toml", f'name = "dr"\njob = "{spec}"\nnodes = [1]\nranks_per_node = [1, 2]\n'
                                       f'modes = ["bsp"]\ntime = "00:05:00"\nexclusive = false\n')
    opts = SubmitOptions(site=load_site("local"), resources=R.JobResources(), runs_dir=tmp_path / "runs", validate=False)
    dry = submit_study(st, opts, dry_run=True)
    assert not (tmp_path / "runs").exists()
    assert dry.script.count("# ===== member ") == 2 and "# ===== collect =====" in dry.script
    assert "#SBATCH --dependency=afterany:<job id of n1r1-bsp-rep0>\n" in dry.script
    assert "#SBATCH --dependency=afterany:<job id of n1r1-bsp-rep0>:<job id of n1r2-bsp-rep0>\n" in dry.script
    runner = Counter()
    real = submit_study(st, opts, runner=runner)
    expected = dry.script.replace("<job id of n1r1-bsp-rep0>", str(FAKE_ID0 + 1)).replace("<job id of n1r2-bsp-rep0>", str(FAKE_ID0 + 2))
    expected = expected.replace(str(dry.run_dir), str(real.run_dir)).replace(dry.run_dir.name.split("-")[-1],
                                                                             real.run_dir.name.split("-")[-1])
    assert real.script == expected
