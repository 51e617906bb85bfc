"""Submission and tracking against fake sbatch/sacct/scontrol/scancel scripts on PATH."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cluster_sim.deploy.folder import RunFolder, overall, read_manifest, write_json
from cluster_sim.deploy.slurm import JobState, Watcher, parse_sacct, parse_scontrol, sbatch
from cluster_sim.errors import SubmissionError

from deploy_helpers import run_cs, submitted_dir

SCONTROL_LINE = ("JobId=7 JobName=wrap UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=1 Nice=0 Account=(null) "
                 "QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=2 BatchFlag=1 "
                 "Reboot=0 ExitCode=3:0 RunTime=00:00:01 TimeLimit=UNLIMITED NodeList=vm BatchHost=vm NumNodes=1")
SCONTROL_ARRAY = ("JobId=11 ArrayJobId=10 ArrayTaskId=1 JobName=a JobState=COMPLETED Reason=None ExitCode=0:0 Restarts=0\n"
                  "JobId=10 ArrayJobId=10 ArrayTaskId=2-3%1 JobName=a JobState=PENDING Reason=JobArrayTaskLimit "
                  "ExitCode=0:0 Restarts=0\n"
                  "JobId=12 ArrayJobId=10 ArrayTaskId=0 JobName=a JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15")


@pytest.mark.parametrize("text,state", [("COMPLETED", JobState.COMPLETED), ("CANCELLED by 0", JobState.CANCELLED),
                                        ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY), ("OOM", JobState.OUT_OF_MEMORY),
                                        ("RUNNING", JobState.RUNNING), ("weird", JobState.UNKNOWN), ("", JobState.UNKNOWN)])
def test_state_parse(text, state):
    assert JobState.parse(text) is state


def test_failure_states():
    fails = {s.value for s in JobState if s.is_failure}
    assert {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "CANCELLED", "BOOT_FAIL",
            "DEADLINE"} <= fails
    assert not JobState.COMPLETED.is_failure and JobState.COMPLETED.is_terminal
    assert JobState.PENDING.is_active and not JobState.UNKNOWN.is_active


def test_parse_scontrol():
    info = parse_scontrol(SCONTROL_LINE)["7"]
    assert (info.state, info.exit_code, info.restarts, info.reason) == (JobState.FAILED, 3, 2, "NonZeroExitCode")
    arr = parse_scontrol(SCONTROL_ARRAY)
    assert arr["10_1"].state is JobState.COMPLETED
    assert arr["10_2"].state is JobState.PENDING and arr["10_3"].state is JobState.PENDING
    assert arr["10_0"].state is JobState.TIMEOUT and arr["10_0"].signal == 15


def test_parse_sacct():
    out = parse_sacct("5|COMPLETED|0:0|vm|None\n6|CANCELLED by 0|0:15|vm|None\n8_[2-4%2]|PENDING|0:0||JobArrayTaskLimit\n"
                      "8_0|FAILED|2:0|vm|NonZeroExitCode\n")
    assert out["5"].state is JobState.COMPLETED
    assert out["6"].state is JobState.CANCELLED
    assert out["8_0"].exit_code == 2 and out["8_3"].state is JobState.PENDING and "8_5" not in out


class FakeRunner:
    def __init__(self, sacct_rc=1, sacct_out="", scontrol_out=SCONTROL_LINE):
        self.calls: list[list[str]] = []
        self.sacct_rc, self.sacct_out, self.scontrol_out = sacct_rc, sacct_out, scontrol_out

    def __call__(self, cmd):
        self.calls.append(list(cmd))
        if cmd[0] == "sacct":
            return subprocess.CompletedProcess(cmd, self.sacct_rc, self.sacct_out,
                                               "" if self.sacct_rc == 0 else "Slurm accounting storage is disabled\n")
        if cmd[0] == "scontrol":
            return subprocess.CompletedProcess(cmd, 0, self.scontrol_out, "")
        raise AssertionError(cmd)


def test_watcher_falls_back_once_and_batches():
    r = FakeRunner(scontrol_out=SCONTROL_LINE + "\n" + SCONTROL_ARRAY)
    w = Watcher(runner=r)
    infos = w.query(["7", "10_1", "10_2", "99"])
    assert infos["7"].source == "scontrol" and infos["99"].state is JobState.UNKNOWN
    assert [c[0] for c in r.calls] == ["sacct", "scontrol"]  # one call each for four jobs
    w.query(["7"])
    assert [c[0] for c in r.calls] == ["sacct", "scontrol", "scontrol"]  # sacct not retried


def test_watcher_uses_sacct_when_it_works():
    r = FakeRunner(sacct_rc=0, sacct_out="7|TIMEOUT|0:0|vm|TimeLimit\n")
    infos = Watcher(runner=r).query(["7"])
    assert infos["7"].state is JobState.TIMEOUT and infos["7"].source == "sacct"
    assert [c[0] for c in r.calls] == ["sacct"]
    assert r.calls[0][:4] == ["sacct", "-X", "--parsable2", "--noheader"]


def test_sbatch_parsable():
    ok = lambda out: (lambda cmd: subprocess.CompletedProcess(cmd, 0, out, ""))  # noqa: E731
    assert sbatch(Path("/x"), runner=ok("123\n")) == "123"
    assert sbatch(Path("/x"), runner=ok("124;clusterA\n")) == "124"
    with pytest.raises(SubmissionError, match="not a job id"):
        sbatch(Path("/x"), runner=ok("Submitted batch job 5\n"))
    with pytest.raises(SubmissionError, match="Invalid partition"):
        sbatch(Path("/x"), runner=lambda cmd: subprocess.CompletedProcess(cmd, 1, "", "sbatch: error: Invalid partition"))


# ---- the CLI with fake scheduler commands on PATH ---------------------------------------------
@pytest.fixture
def fake_slurm(tmp_path):
    b = tmp_path / "bin"
    b.mkdir()
    log = tmp_path / "calls.log"
    state = tmp_path / "state"
    state.write_text("FAILED 3:0")
    scripts = {
        "sbatch": 'echo "sbatch $*" >> {log}; if [ -f {tmp}/refuse ]; then echo "sbatch: error: Batch job submission failed: Invalid account" >&2; exit 1; fi; echo 4242',
        "sacct": 'echo "sacct $*" >> {log}; echo "Slurm accounting storage is disabled" >&2; exit 1',
        "scontrol": 'echo "scontrol $*" >> {log}; read s c < {state}; '
                    'echo "JobId=4242 JobName=x JobState=$s Reason=NonZeroExitCode Restarts=0 ExitCode=$c NodeList=vm"',
        "scancel": 'echo "scancel $*" >> {log}',
    }
    for name, body in scripts.items():
        p = b / name
        p.write_text("#!/bin/bash\n" + body.format(log=log, state=state, tmp=tmp_path) + "\n")
        p.chmod(0o755)
    return {"PATH": f"{b}:{os.environ['PATH']}"}, log, state, tmp_path


def test_cli_submit_status_cancel_with_fakes(fake_slurm, spec, runs_dir, payload):
    env, log, state, tmp = fake_slurm
    cp = run_cs("submit", spec, "--runs-dir", runs_dir, "--no-validate", "--payload", payload, env=env, check=True)
    rd = submitted_dir(cp.stdout)
    man = read_manifest(rd)
    assert man["jobs"][0]["job_id"] == "4242" and (rd / "job.sbatch").is_file() and (rd / "job.toml").is_file()
    assert "sbatch --parsable" in log.read_text()
    (rd / "logs" / "fake-4242.out").write_text("line 1\nTraceback (most recent call last):\nBoom: exploded\n")
    cp = run_cs("status", rd, env=env)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "FAILED exit=3" in cp.stdout and "Boom: exploded" in cp.stdout and "fake-4242.out" in cp.stdout
    cp = run_cs("status", rd, "--json", env=env)
    data = json.loads(cp.stdout)
    assert data["state"] == "FAILED" and data["units"][0]["source"] == "scontrol"
    state.write_text("RUNNING 0:0")
    cp = run_cs("status", rd, env=env)
    assert cp.returncode == 0 and "RUNNING" in cp.stdout
    cp = run_cs("cancel", rd, env=env, check=True)
    assert "scancel 4242" in log.read_text()


def test_cli_sbatch_refusal_is_reported(fake_slurm, spec, runs_dir, payload):
    env, log, state, tmp = fake_slurm
    (tmp / "refuse").write_text("")
    cp = run_cs("submit", spec, "--runs-dir", runs_dir, "--no-validate", "--payload", payload, env=env)
    assert cp.returncode == 1 and "Invalid account" in cp.stderr


def test_dry_run_submits_and_creates_nothing(fake_slurm, spec, runs_dir):
    env, log, state, tmp = fake_slurm
    cp = run_cs("submit", spec, "--runs-dir", runs_dir, "--site", "param-brahma", "--nodes", "4",
                "--ranks-per-node", "2", "--gpus-per-node", "2", "--time", "02:00:00",
                "--container", "cluster-sim-gpu.sif", "--dry-run", "--no-validate", env=env, check=True)
    assert cp.stdout.startswith("#!/bin/bash") and "#SBATCH --gres=gpu:2" in cp.stdout
    assert "singularity exec --nv" in cp.stdout
    assert not runs_dir.exists() and not log.exists()


def test_forgotten_job_resolved_from_exitcode_file(tmp_path):
    rd = tmp_path / "runs" / "x-00000000"
    rd.mkdir(parents=True)
    write_json(rd / "manifest.json", {"kind": "run", "jobs": [{"job_id": "999999"}],
                                      "units": [{"unit": "run", "dir": ".", "job": "999999"}]})
    r = FakeRunner(scontrol_out="")
    (rd / "exitcode").write_text("0 1 2026-01-01T00:00:00Z\n")
    sts = RunFolder.open(rd).status(watcher=Watcher(runner=r))
    assert sts[0].state is JobState.COMPLETED and overall(sts) is JobState.COMPLETED
    (rd / "exitcode").write_text("4 0 2026-01-01T00:00:00Z\n")
    sts = RunFolder.open(rd).status(watcher=Watcher(runner=r))
    assert sts[0].state is JobState.FAILED and sts[0].exit_code == 4


def test_status_of_non_run_folder(tmp_path):
    cp = run_cs("status", tmp_path)
    assert cp.returncode == 2 and "manifest.json" in cp.stderr


def test_submit_validates_with_the_core_first(fake_slurm, runs_dir):
    """Without --no-validate, submit checks the spec as `cluster-sim run` would and submits nothing on exit 2."""
    env, log, state, tmp = fake_slurm
    job = Path(__file__).resolve().parents[2] / "jobs" / "cobahh.toml"
    cp = run_cs("submit", job, "--runs-dir", runs_dir, "--set", "integrator.method=nope", env=env)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "run: integrator.method = 'nope'" in cp.stderr and "fix:" in cp.stderr, cp.stderr
    assert not log.exists() and not runs_dir.exists()
    cp = run_cs("submit", job, "--runs-dir", runs_dir, "--set", "simulation.seed=3", env=env)
    assert cp.returncode == 0, cp.stderr
    assert "sbatch --parsable" in log.read_text()
