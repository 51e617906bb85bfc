"""Against the real one-node SLURM (scripts/slurm_local.sh; no slurmdbd, so sacct is disabled).

Most tests put the fake ``cluster-sim run`` (tests/deploy/payloads/fake_cluster_sim.py: same
contract, SONATA output, checkpoint on USR1/TERM, exit 75, --resume) in the engine's place, so the
templates, trap, requeue and tracking are exercised exactly as in production. Tests named
``test_engine_*`` run the real engine and are skipped, with the reason, until it is importable;
``test_two_ranks_*`` waits for MPI.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy_helpers import (PAYLOAD, ROOT, read_spikes, release_when_requeued, run_cs, scontrol_job,
                            submitted_dir)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]

COMMON = ("--cpus-per-task", "1", "--no-validate")


def submit(*args, runs_dir: Path, payload: str | None = None) -> Path:
    extra = ("--payload", payload) if payload else ()
    cp = run_cs("submit", *args, "--runs-dir", runs_dir, *COMMON, *extra, check=True)
    return submitted_dir(cp.stdout)


def job_id(rd: Path) -> str:
    return (rd / "job_id").read_text().split()[0]


def status_json(rd: Path, *extra: str) -> dict:
    cp = run_cs("status", rd, "--json", *extra)
    return json.loads(cp.stdout)


def wait_json(rd: Path, timeout: float = 120) -> dict:
    return status_json(rd, "--wait", "--timeout", str(timeout))


def wait_running(jid: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scontrol_job(jid).get("JobState") == "RUNNING":
            return
        time.sleep(0.3)
    raise AssertionError(f"job {jid} never ran: {scontrol_job(jid)}")


def wait_started(rd: Path, timeout: float = 60) -> None:
    """Until the (fake) run has started: argv.json is written after its signal handlers are in place."""
    deadline = time.monotonic() + timeout
    while not (rd / "out" / "argv.json").exists():
        assert time.monotonic() < deadline, log_text(rd)
        time.sleep(0.2)


def local_payload_run(spec: Path, out: Path, *sets: str) -> Path:
    """The uninterrupted reference run, without the sleeps (fake.step_s does not change spikes)."""
    cmd = [sys.executable, str(PAYLOAD), "run", str(spec), "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    cmd += ["--set", "fake.step_s=0"]
    subprocess.run(cmd, check=True, capture_output=True)
    return out / "spikes.h5"


def log_text(rd: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((rd / "logs").glob("*.out")))


# ---- basic run, provenance, collect ----------------------------------------------------------
def test_submit_run_matches_local_run(spec, runs_dir, payload, tmp_path):
    sets = ("fake.steps=15", "fake.seed=4")
    rd = submit(spec, "--time", "00:05:00", *[x for s in sets for x in ("--set", s)], runs_dir=runs_dir,
                payload=payload)
    st = wait_json(rd)
    assert st["state"] == "COMPLETED", log_text(rd)
    assert st["units"][0]["exit_code"] == 0 and st["units"][0]["source"] == "scontrol"
    assert read_spikes(rd / "out" / "spikes.h5") == read_spikes(local_payload_run(spec, tmp_path / "local", *sets))
    assert "--resume" not in json.loads((rd / "out" / "argv.json").read_text())["argv"]
    prov = rd / "provenance" / "restart-0"
    for f in ("host.txt", "env.txt", "nodes.txt", "versions.txt"):
        assert (prov / f).stat().st_size > 0, f
    assert "SLURM_JOB_ID=" in (prov / "env.txt").read_text()
    assert "slurm" in (prov / "versions.txt").read_text()
    assert list((rd / "logs").glob("*-%s.out" % job_id(rd)))
    run_cs("collect", rd, check=True)
    row = next(csv.DictReader((rd / "results" / "summary.csv").open()))
    assert row["state"] == "COMPLETED" and int(row["n_spikes"]) > 0 and float(row["phase_integrate"]) > 0


def test_status_with_accounting_disabled(spec, runs_dir, payload):
    cp = subprocess.run(["sacct", "--parsable2", "--noheader"], capture_output=True, text=True)
    assert cp.returncode != 0, "this cluster is meant to run without slurmdbd"
    rd = submit(spec, "--time", "00:05:00", "--set", "fake.steps=3", runs_dir=runs_dir, payload=payload)
    st = status_json(rd)
    assert st["units"][0]["source"] == "scontrol"
    assert st["units"][0]["state"] in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "COMPLETED")
    assert wait_json(rd)["state"] == "COMPLETED"


# ---- failure, cancel ------------------------------------------------------------------------
def test_failing_job_reported_with_log_tail(spec, runs_dir, payload):
    rd = submit(spec, "--time", "00:05:00", "--set", "fake.exit=3", runs_dir=runs_dir, payload=payload)
    wait_json(rd)
    cp = run_cs("status", rd)
    assert cp.returncode == 1, cp.stdout
    assert "FAILED exit=3" in cp.stdout
    assert "failing on purpose with status 3" in cp.stdout  # the log tail
    assert "run exited with status 3" in cp.stdout


def test_cancel(spec, runs_dir, payload):
    rd = submit(spec, "--time", "00:05:00", "--set", "fake.steps=600", "--set", "fake.step_s=0.1",
                runs_dir=runs_dir, payload=payload)
    wait_running(job_id(rd))
    run_cs("cancel", rd, check=True)
    st = wait_json(rd, timeout=60)
    assert st["state"] == "CANCELLED", st
    assert run_cs("status", rd).returncode == 1


# ---- arrays, dependencies, studies ------------------------------------------------------------
def test_array_sweep_and_collect(spec, runs_dir, payload, tmp_path):
    sw = tmp_path / "sweep.toml"
    sw.write_text(f'job = "{spec.name}"\nmax_parallel = 2\n[set]\n"fake.steps" = 5\n'
                  f'[sweep]\n"stimuli.odor.amplitude_uA_cm2" = [0.5, 1, 2]\n')
    cp = run_cs("sweep", sw, "--runs-dir", runs_dir, "--time", "00:05:00", *COMMON, "--payload", payload, check=True)
    rd = submitted_dir(cp.stdout)
    assert "#SBATCH --array=0-2%2" in (rd / "job.sbatch").read_text()
    st = wait_json(rd)
    assert st["state"] == "COMPLETED", log_text(rd)
    assert [u["unit"] for u in st["units"]] == ["task-0", "task-1", "task-2"]
    for i, amp in enumerate(("0.5", "1", "2")):
        argv = json.loads((rd / "tasks" / str(i) / "out" / "argv.json").read_text())
        assert argv["sets"] == ["fake.steps=5", f"stimuli.odor.amplitude_uA_cm2={amp}"]
        assert (rd / "tasks" / str(i) / "provenance" / "restart-0" / "env.txt").is_file()
    jid = job_id(rd)
    assert sorted(p.name.split("-")[-1] for p in (rd / "logs").glob("*.out")) == [f"{jid}_{i}.out" for i in range(3)]
    one = run_cs("logs", rd, "--task", "1")  # one array task's log, not the others'
    assert one.returncode == 0 and one.stdout.count("run exited with status 0") == 1, one.stdout + one.stderr
    assert run_cs("logs", rd).stdout.count("run exited with status 0") == 3
    run_cs("collect", rd, check=True)
    rows = list(csv.DictReader((rd / "results" / "summary.csv").open()))
    assert [r["stimuli.odor.amplitude_uA_cm2"] for r in rows] == ["0.5", "1", "2"]
    spikes = [int(r["n_spikes"]) for r in rows]
    assert spikes[0] < spikes[1] < spikes[2]  # the fake payload's rate grows with the amplitude


def test_dependency_chain(spec, runs_dir, payload):
    # the first job outlasts the checks below even on a loaded machine (15 s)
    a = submit(spec, "--time", "00:05:00", "--set", "fake.steps=150", "--set", "fake.step_s=0.1", runs_dir=runs_dir,
               payload=payload)
    b = submit(spec, "--time", "00:05:00", "--dependency", f"afterok:{job_id(a)}", "--set", "fake.steps=2",
               runs_dir=runs_dir, payload=payload)
    time.sleep(1.0)
    fb = scontrol_job(job_id(b))
    assert fb["JobState"] == "PENDING" and fb["Reason"] == "Dependency"
    # status shows why it waits, and no exit code for a job that has not ended (scontrol says 0:0)
    unit = status_json(b)["units"][0]
    assert (unit["state"], unit["reason"], unit["exit_code"]) == ("PENDING", "Dependency", None), unit
    text = run_cs("status", b).stdout
    assert "PENDING (Dependency)" in text and "exit=" not in text, text
    assert wait_json(b)["state"] == "COMPLETED"
    fa, fb = scontrol_job(job_id(a)), scontrol_job(job_id(b))
    assert fb["StartTime"] >= fa["EndTime"]


def test_scaling_study_chain_and_collect_job(spec, runs_dir, payload, tmp_path):
    st = tmp_path / "study.toml"
    st.write_text(f'name = "smoke"\njob = "{spec.name}"\nnodes = [1]\nranks_per_node = [1, 2]\nmodes = ["bsp"]\n'
                  f'seeds = [1]\nseed_key = "fake.seed"\ntime = "00:05:00"\nexclusive = false\n'
                  f'[set]\n"fake.steps" = 8\n')
    cp = run_cs("scale", st, "--runs-dir", runs_dir, "--no-validate", "--payload", payload, check=True)
    rd = submitted_dir(cp.stdout)
    man = json.loads((rd / "manifest.json").read_text())
    ids = [j["job_id"] for j in man["jobs"]]
    assert [j["role"] for j in man["jobs"]] == ["member", "member", "collect"]
    assert wait_json(rd)["state"] == "COMPLETED", log_text(rd)
    # the collect job runs after every member, by dependency
    deadline = time.monotonic() + 90
    while scontrol_job(ids[-1]).get("JobState") != "COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.5)
    fc = scontrol_job(ids[-1])
    assert fc["JobState"] == "COMPLETED", (fc, log_text(rd))
    assert fc["StartTime"] >= scontrol_job(ids[1])["EndTime"] >= scontrol_job(ids[1])["StartTime"]
    assert scontrol_job(ids[1])["StartTime"] >= scontrol_job(ids[0])["EndTime"]
    rows = list(csv.DictReader((rd / "results" / "members.csv").open()))
    assert [(r["ranks_per_node"], r["state"], r["ranks"]) for r in rows] == [("1", "COMPLETED", "1"),
                                                                            ("2", "COMPLETED", "2")]
    agg = list(csv.DictReader((rd / "results" / "scaling.csv").open()))
    assert [a["ranks"] for a in agg] == ["1", "2"] and float(agg[0]["speedup"]) == 1.0
    assert float(agg[0]["speedup_propagation"]) == 1.0 and float(agg[1]["propagation_mean_s"]) > 0
    for png in ("wall_time.png", "speedup.png", "efficiency.png", "rtf_phases.png"):
        assert (rd / "results" / png).stat().st_size > 1000
    # written by the collect job itself: its own RUNNING state must not count (it said RUNNING forever)
    summary = json.loads((rd / "results" / "summary.json").read_text())
    assert summary["state"] == "COMPLETED", summary


def _real_spec(tmp_path: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import SMALL_COBAHH

    p = tmp_path / "cobahh.toml"
    p.write_text(SMALL_COBAHH)
    return p


def _jobs_named(name: str) -> list[str]:
    return subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout.split()


def test_sweep_validates_every_task_before_sbatch(runs_dir, tmp_path):
    """Task 2 of 3 has a bad value: exit 2 naming it, no run folder, no job (only task 0 was checked before)."""
    spec = _real_spec(tmp_path)
    sw = tmp_path / "sweep.toml"
    sw.write_text(f'job = "{spec.name}"\nname = "h13-badsweep"\n[sweep]\n"integrator.dt_ms" = [0.1, 0.05, -1.0]\n')
    cp = run_cs("sweep", sw, "--runs-dir", runs_dir, "--time", "00:02:00", "--cpus-per-task", "1")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "sweep task 2: integrator.dt_ms" in cp.stderr, cp.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
    assert _jobs_named("h13-badsweep") == []


def test_study_validates_each_member_with_its_mode(runs_dir, tmp_path):
    """float32 is fine for BSP but refused by the asynchronous mode: the async member fails submit."""
    spec = _real_spec(tmp_path)
    st = tmp_path / "study.toml"
    st.write_text(f'name = "h13-badstudy"\njob = "{spec.name}"\nnodes = [1]\nranks_per_node = [1]\n'
                  f'modes = ["bsp", "async"]\ntime = "00:02:00"\nexclusive = false\n'
                  f'[set]\n"integrator.precision" = "float32"\n')
    cp = run_cs("scale", st, "--runs-dir", runs_dir)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "study member n1r1-async-rep0: integrator.precision" in cp.stderr, cp.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
    assert _jobs_named("h13-badstudy-n1r1-bsp-rep0") == []


# ---- requeue and resume ---------------------------------------------------------------------
def test_usr1_checkpoints_requeues_and_resumes_identically(spec, runs_dir, payload, tmp_path):
    sets = ("fake.steps=60", "fake.step_s=0.1", "fake.seed=9")
    rd = submit(spec, "--time", "00:05:00", *[x for s in sets for x in ("--set", s)], runs_dir=runs_dir,
                payload=payload)
    jid = job_id(rd)
    wait_started(rd)
    # What --signal=B:USR1@T does before the time limit: signal the batch shell only.
    subprocess.run(["scancel", "--signal=USR1", "--batch", jid], check=True)
    assert release_when_requeued(jid) == 1
    st = wait_json(rd)
    assert st["state"] == "COMPLETED", log_text(rd)
    assert st["units"][0]["restarts"] == 1
    log = log_text(rd)
    assert "batch shell got SIGUSR1" in log and "requeueing job" in log and "resuming" in log
    assert "fake cluster-sim: resumed at step" in log
    assert (rd / "provenance" / "restart-1" / "env.txt").is_file()
    assert read_spikes(rd / "out" / "spikes.h5") == read_spikes(local_payload_run(spec, tmp_path / "local", *sets))


def test_array_task_requeues_alone(spec, runs_dir, payload, tmp_path):
    """Requeueing one array task must not requeue its siblings (scontrol requeue ARRAYID_TASK)."""
    sw = tmp_path / "sweep.toml"
    sw.write_text(f'job = "{spec.name}"\n[set]\n"fake.steps" = 50\n"fake.step_s" = 0.1\n[sweep]\n"fake.seed" = [1, 2]\n')
    cp = run_cs("sweep", sw, "--runs-dir", runs_dir, "--time", "00:05:00", *COMMON, "--payload", payload, check=True)
    rd = submitted_dir(cp.stdout)
    aid = job_id(rd)
    deadline = time.monotonic() + 60
    while not (rd / "tasks" / "1" / "out" / "argv.json").exists():
        assert time.monotonic() < deadline, log_text(rd)
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", "--batch", f"{aid}_1"], check=True)
    assert release_when_requeued(f"{aid}_1") == 1
    st = wait_json(rd)
    assert st["state"] == "COMPLETED", log_text(rd)
    assert [u["restarts"] for u in st["units"]] == [0, 1], st
    assert "SIGTERM" not in (next((rd / "logs").glob(f"*-{aid}_0.out")).read_text())
    assert read_spikes(rd / "tasks" / "1" / "out" / "spikes.h5") == read_spikes(
        local_payload_run(spec, tmp_path / "local", "fake.steps=50", "fake.seed=2"))


def test_requeue_cap(spec, runs_dir, payload):
    rd = submit(spec, "--time", "00:05:00", "--max-requeues", "0", "--set", "fake.steps=100",
                "--set", "fake.step_s=0.1", runs_dir=runs_dir, payload=payload)
    jid = job_id(rd)
    wait_started(rd)
    subprocess.run(["scancel", "--signal=USR1", "--batch", jid], check=True)
    st = wait_json(rd, timeout=60)
    assert st["state"] == "FAILED" and st["units"][0]["exit_code"] == 75, st
    assert "already requeued 0 times (max 0)" in st["units"][0]["log_tail"]
    assert (rd / "out" / "checkpoint.h5").is_file()


@pytest.mark.slow
def test_time_limit_signal_requeues_and_resumes(spec, runs_dir, payload, tmp_path):
    """--time=00:01:00 with --signal=B:USR1@50: SLURM itself signals before the limit."""
    sets = ("fake.steps=480", "fake.step_s=0.1", "fake.seed=5")
    rd = submit(spec, "--time", "00:01:00", "--signal-seconds", "50", *[x for s in sets for x in ("--set", s)],
                runs_dir=runs_dir, payload=payload)
    jid = job_id(rd)
    assert "#SBATCH --signal=B:USR1@50" in (rd / "job.sbatch").read_text()
    assert release_when_requeued(jid, timeout_s=100) >= 1, log_text(rd)
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        f = scontrol_job(jid)
        if f["JobState"] in ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"):
            break
        if f["JobState"] == "PENDING" and f.get("Reason") == "BeginTime":
            release_when_requeued(jid)
        time.sleep(0.5)
    st = status_json(rd)
    assert st["state"] == "COMPLETED", (st, log_text(rd))
    assert st["units"][0]["restarts"] >= 1
    assert read_spikes(rd / "out" / "spikes.h5") == read_spikes(local_payload_run(spec, tmp_path / "local", *sets))


# ---- the real engine ------------------------------------------------------------------------
# The shipped COBAHH job (4000 neurons), shortened.
ENGINE_JOB = ROOT / "jobs" / "cobahh.toml"
ENGINE_ARGS: tuple[str, ...] = ("--duration", "500")


@pytest.fixture(scope="module")
def engine_reference(tmp_path_factory):
    """Spikes of an uninterrupted local run (no SLURM), computed once."""
    out = tmp_path_factory.mktemp("engine_local") / "out"
    cp = subprocess.run([sys.executable, "-m", "cluster_sim.cli", "run", str(ENGINE_JOB), "--out", str(out), "-q",
                         *ENGINE_ARGS], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert cp.returncode == 0, cp.stderr[-3000:]
    return read_spikes(out / "spikes.h5")


def test_engine_run_matches_local_run(runs_dir, engine_reference):
    rd = submit(ENGINE_JOB, "--time", "00:10:00", *ENGINE_ARGS, runs_dir=runs_dir)
    st = wait_json(rd, timeout=600)
    assert st["state"] == "COMPLETED", log_text(rd)
    assert read_spikes(rd / "out" / "spikes.h5") == engine_reference
    run = json.loads((rd / "out" / "run.json").read_text())
    assert run["ranks"] == 1 and run["n_spikes"] > 0
    run_cs("collect", rd, check=True)
    row = next(csv.DictReader((rd / "results" / "summary.csv").open()))
    assert float(row["phase_integrate"]) > 0 and float(row["real_time_factor"]) > 0


def test_engine_requeue_resumes_identically(runs_dir, engine_reference):
    rd = submit(ENGINE_JOB, "--time", "00:10:00", "--checkpoint-every", "20", *ENGINE_ARGS, runs_dir=runs_dir)
    jid = job_id(rd)
    # Signal once the engine is integrating (its first periodic checkpoint exists): the handler is installed.
    deadline = time.monotonic() + 300
    while not any((rd / "out" / f).is_file() for f in ("checkpoint/manifest.json", "checkpoint.npz", "checkpoint.h5")):
        assert time.monotonic() < deadline and scontrol_job(jid).get("JobState") in ("PENDING", "CONFIGURING", "RUNNING"), \
            log_text(rd)
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", "--batch", jid], check=True)
    assert release_when_requeued(jid, timeout_s=300) == 1, log_text(rd)
    st = wait_json(rd, timeout=600)
    assert st["state"] == "COMPLETED", log_text(rd)
    assert st["units"][0]["restarts"] == 1
    log = log_text(rd)
    assert "requeueing job" in log and "checkpoint found" in log
    run = json.loads((rd / "out" / "run.json").read_text())
    assert run.get("resumed_from_ms"), run
    assert read_spikes(rd / "out" / "spikes.h5") == engine_reference


def test_two_ranks_match_one_rank(runs_dir, engine_reference):
    """2 ranks through srun --mpi=pmix give the 1-rank spikes."""
    rd = submit(ENGINE_JOB, "--time", "00:10:00", "--ranks-per-node", "2", *ENGINE_ARGS, runs_dir=runs_dir)
    st = wait_json(rd, timeout=600)
    assert st["state"] == "COMPLETED", log_text(rd)
    run = json.loads((rd / "out" / "run.json").read_text())
    assert run.get("ranks") == 2, f"srun --ntasks-per-node=2 ran {run.get('ranks')} rank(s): MPI/PMIx not wired"
    assert read_spikes(rd / "out" / "spikes.h5") == engine_reference


def test_refused_sbatch_leaves_no_folder(spec, runs_dir, payload):
    cp = run_cs("submit", spec, "--runs-dir", runs_dir, *COMMON, "--payload", payload, "--time", "00:05:00",
                "--partition", "h13nosuchpartition")
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "submission failed" in cp.stderr and "run failed" not in cp.stderr, cp.stderr
    assert "h13nosuchpartition" in cp.stderr.lower() or "partition" in cp.stderr.lower(), cp.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), list(runs_dir.iterdir())


def test_status_imports_no_dask_or_tensorflow(spec, runs_dir, payload):
    """`cluster-sim status` is called in loops: it must not pay for TensorFlow/dask/h5py imports."""
    rd = submit(spec, "--time", "00:02:00", "--set", "fake.steps=1", runs_dir=runs_dir, payload=payload)
    cmd = [sys.executable, "-X", "importtime", "-m", "cluster_sim.cli", "status", str(rd)]
    t0 = time.perf_counter()
    cp = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    wall = time.perf_counter() - t0
    assert cp.returncode == 0, cp.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in cp.stderr.splitlines() if line.startswith("import time:")}
    heavy = sorted(m for m in imported if m.split(".")[0] in ("tensorflow", "dask", "h5py", "matplotlib", "keras"))
    assert not heavy, heavy
    print(f"status wall {wall:.2f} s")  # ~0.4 s here; was ~3.7 s with dask/TensorFlow
    wait_json(rd)


def test_logs_follow_and_runs_list(spec, runs_dir, payload, tmp_path):
    rd = submit(spec, "--time", "00:02:00", "--set", "fake.steps=6", "--set", "fake.step_s=0.2", runs_dir=runs_dir,
                payload=payload)
    cp = run_cs("logs", rd, "--follow", timeout=120)  # returns once the job has ended
    assert cp.returncode == 0, cp.stderr
    assert "[cluster-sim] job " in cp.stdout and "run exited with status 0" in cp.stdout, cp.stdout
    cp = run_cs("runs", "--runs-dir", runs_dir)
    assert cp.returncode == 0 and str(rd) in cp.stdout, cp.stdout + cp.stderr
    row = next(line for line in cp.stdout.splitlines() if str(rd) in line)
    assert row.split()[:2] == ["COMPLETED", "run"], row
    assert run_cs("logs", rd, "--task", "7").returncode == 2


def test_cancelled_run_resubmits_from_its_checkpoint(spec, runs_dir, payload):
    rd = submit(spec, "--time", "00:05:00", "--set", "fake.steps=40", "--set", "fake.step_s=0.1", runs_dir=runs_dir,
                payload=payload)
    first = job_id(rd)
    wait_started(rd)
    time.sleep(1.0)
    cp = run_cs("cancel", rd, check=True)
    assert f"cluster-sim resubmit {rd}" in cp.stdout  # the hint names the command
    assert wait_json(rd, timeout=60)["state"] == "CANCELLED"
    cp = run_cs("resubmit", rd, "--time", "4:00", check=True)
    second = job_id(rd)
    assert second != first and scontrol_job(second)["TimeLimit"] == "00:04:00"
    st = wait_json(rd)
    assert st["state"] == "COMPLETED" and st["units"][0]["job_id"] == second, (st, log_text(rd))
    man = json.loads((rd / "manifest.json").read_text())
    assert [j["job_id"] for j in man["jobs"]] == [first, second] and man["jobs"][1]["resubmit_of"] == first
    argv = json.loads((rd / "out" / "argv.json").read_text())["argv"]
    assert "--resume" in argv and "fake.steps=40" in argv  # same overrides, from the checkpoint
    assert (rd / "provenance" / f"job-{first}" / "restart-0" / "host.txt").is_file()  # kept, not overwritten
    assert (rd / "provenance" / "restart-0" / "host.txt").is_file()
    assert run_cs("resubmit", rd).returncode == 2  # completed: nothing to continue
