"""RunFolder: submitit's Job shape over a durable folder (create, submit and record, status,
wait, cancel, collect), the refused-sbatch clean-up, and kind dispatch in open_run."""
from __future__ import annotations

import json
import subprocess

import pytest

from cluster_sim.deploy.folder import RunFolder, write_json
from cluster_sim.deploy.runs import open_run
from cluster_sim.deploy.slurm import JobState, Watcher
from cluster_sim.deploy.study import StudyFolder
from cluster_sim.deploy.sweep import SweepFolder
from cluster_sim.errors import ConfigError, SubmissionError


class FakeSlurm:
    """sbatch hands out ids (or refuses the n-th call); scontrol reports ``states``; scancel is logged."""

    def __init__(self, refuse_call: int = 0):
        self.n, self.calls, self.refuse_call, self.states = 70_000_000, [], refuse_call, {}

    def __call__(self, cmd):
        self.calls.append(list(cmd))
        if cmd[0] == "sbatch":
            if self.refuse_call and sum(c[0] == "sbatch" for c in self.calls) == self.refuse_call:
                return subprocess.CompletedProcess(cmd, 1, "", "sbatch: error: invalid partition")
            self.n += 1
            return subprocess.CompletedProcess(cmd, 0, f"{self.n}\n", "")
        if cmd[0] == "sacct":
            return subprocess.CompletedProcess(cmd, 1, "", "accounting storage is disabled")
        if cmd[0] == "scontrol":
            lines = [f"JobId={j} JobState={s} Reason=None Restarts=0 ExitCode={'0:0' if s != 'FAILED' else '2:0'}"
                     for j, s in self.states.items()]
            return subprocess.CompletedProcess(cmd, 0, "\n".join(lines) + "\n", "")
        return subprocess.CompletedProcess(cmd, 0, "", "")


def _folder(tmp_path, spec, cls=RunFolder):
    f = cls.new(tmp_path / "runs", "demo")
    assert not f.path.exists() and f.comment == f"cluster-sim-{f.uuid}"  # nothing on disk before create
    f.create(spec, site="local", script="job.sbatch")
    f.write_text("job.sbatch", "#!/bin/bash\ntrue\n")
    return f


def test_job_shape_submit_status_wait_cancel_collect(tmp_path, spec):
    slurm = FakeSlurm()
    f = _folder(tmp_path, spec)
    jid = f.submit("job.sbatch", role="run", unit="run", runner=slurm)
    man = json.loads((f.path / "manifest.json").read_text())
    assert man["kind"] == "run" and man["jobs"] == [{"job_id": jid, "role": "run", "script": "job.sbatch"}]
    assert man["units"] == [{"unit": "run", "dir": ".", "job": jid}]
    assert (f.path / "job_id").read_text() == f"{jid}\n" and (f.path / "job.toml").read_text() == spec.read_text()
    w = Watcher(runner=slurm)
    slurm.states = {jid: "PENDING"}
    assert f.status(watcher=w)[0].state is JobState.PENDING and f.status(watcher=w)[0].exit_code is None
    assert not f.done(watcher=w)
    slurm.states = {jid: "COMPLETED"}
    sts = f.wait(watcher=w, timeout_s=30, delay_s=0.01, settle_s=0.01)
    assert [s.state for s in sts] == [JobState.COMPLETED] and f.state(watcher=w) is JobState.COMPLETED
    assert f.done(watcher=w)
    write_json(f.path / "out" / "run.json", {"n_spikes": 7, "wall_seconds": 2.0, "simulated_ms": 100.0,
                                             "rates_hz": {"E": 3.5}})
    reopened = open_run(f.path)
    assert type(reopened) is RunFolder and reopened.manifest == f.manifest
    res = reopened.collect(watcher=w)
    summary = json.loads((res / "summary.json").read_text())
    assert summary["state"] == "COMPLETED" and summary["run"]["n_spikes"] == 7
    assert "rate_hz_E" in (res / "summary.csv").read_text()
    assert reopened.cancel(runner=slurm) == [jid] and slurm.calls[-1] == ["scancel", jid]


def test_array_units_and_resubmit_replacing_a_unit(tmp_path, spec):
    slurm = FakeSlurm()
    f = _folder(tmp_path, spec, SweepFolder)
    jid = f.submit("job.sbatch", role="array", tasks=3, runner=slurm)
    assert [u["job"] for u in f.units()] == [f"{jid}_{i}" for i in range(3)] and f.manifest["jobs"][0]["tasks"] == 3
    r = _folder(tmp_path, spec)
    old = r.submit("job.sbatch", role="run", unit="run", runner=slurm)
    again = RunFolder.open(r.path)  # a later process: the folder is not its to remove
    new = again.submit("job.sbatch", role="run", replaces=old, runner=slurm, resubmit_of=old)
    assert [u["job"] for u in again.units()] == [new] and [j["job_id"] for j in again.manifest["jobs"]] == [old, new]
    assert (r.path / "job_id").read_text() == f"{new}\n"
    refusing = FakeSlurm(refuse_call=1)
    with pytest.raises(SubmissionError, match="unchanged"):
        RunFolder.open(r.path).submit("job.sbatch", role="run", replaces=new, runner=refusing)
    assert r.path.is_dir() and [u["job"] for u in RunFolder.open(r.path).units()] == [new]


def test_refused_sbatch_cancels_what_was_queued_and_removes_the_folder(tmp_path, spec):
    slurm = FakeSlurm(refuse_call=3)
    f = _folder(tmp_path, spec, StudyFolder)
    a = f.submit("job.sbatch", role="member", unit="m0", runner=slurm)
    b = f.submit("job.sbatch", role="member", unit="m1", runner=slurm)
    with pytest.raises(SubmissionError, match=f"invalid partition; cancelled the 2 job\\(s\\) it had queued \\({a} {b}\\)"):
        f.submit("job.sbatch", role="collect", unit="collect", runner=slurm)
    assert ["scancel", a, b] in slurm.calls and not f.path.exists()


def test_open_run_dispatches_on_kind(tmp_path, spec):
    for cls in (RunFolder, SweepFolder, StudyFolder):
        f = _folder(tmp_path, spec, cls)
        assert type(open_run(f.path)) is cls
    f = _folder(tmp_path, spec, SweepFolder)
    with pytest.raises(ConfigError, match="open_run"):
        RunFolder.open(f.path).collect()  # a sweep folder is not collected as a single run
    write_json(f.path / "manifest.json", {**f.manifest, "kind": "bundle"})
    with pytest.raises(ConfigError, match="kinds: run, sweep, study"):
        open_run(f.path)
