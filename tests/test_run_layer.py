"""The run layer: one entry point for both modes, one place that refuses a spec for a mode and
rank count, and backends that are siblings (neither imports the other)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import JOBS, ROOT, cli
from tests.mpi_util import mpirun

# (what is refused, job, extra arguments, ranks): every kind of refusal ``check`` makes.
REFUSALS = [
    ("partition cuts an in-step coupling", "antennal_lobe.toml", ["--set", 'engine.partition="block"'], 2),
    ("async needs float64", "cobahh.toml", ["--mode", "async", "--set", 'integrator.precision="float32"'], 1),
    ("async needs a delay > 0", "cobahh_poisson.toml",
     ["--mode", "async", "--set", "projections.EE.delay_ms=0.0"], 1),
    ("round_robin cuts the AL's couplings in async too", "antennal_lobe.toml",
     ["--mode", "async", "--set", 'engine.partition="round_robin"'], 3),
]


def _error_line(stderr: str) -> str:
    """The first error message (ranks may print theirs onto one line at the same moment)."""
    import re

    found = re.findall(r"cluster-sim: error: (.*?)(?=\[rank \d+/\d+\]|cluster-sim: error: |\n|$)", stderr)
    assert found, stderr[-2000:]
    return found[0].strip()


@pytest.mark.mpi
@pytest.mark.parametrize("what,job,extra,ranks", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_validate_and_run_agree_on_every_refusal(what: str, job: str, extra: list[str], ranks: int, tmp_path: Path,
                                                 no_tf: dict[str, str]) -> None:
    val = cli("validate", str(JOBS / job), *extra, "--ranks", str(ranks))
    assert val.returncode == 2, (what, val.stdout, val.stderr[-2000:])
    out = tmp_path / "out"
    args = ("run", str(JOBS / job), "--out", str(out), "-q", *extra)
    env = no_tf  # refused before TensorFlow is imported, or this run fails
    run = cli(*args, env=env) if ranks == 1 else mpirun(ranks, *args, timeout=120, env=env)
    assert run.returncode == 2, (what, run.stderr[-2000:])
    assert _error_line(run.stderr) == _error_line(val.stderr), what
    assert not (out / "spikes.h5").exists(), "refused before any output"


def test_validate_accepts_what_runs(tmp_path: Path) -> None:
    """The same spec that validate refuses on 2 block-partitioned ranks passes with components."""
    ok = cli("validate", str(JOBS / "antennal_lobe.toml"), "--set", 'engine.partition="components"', "--ranks", "3")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "valid for bsp on 3 ranks" in ok.stdout


def test_public_api_exports_one_entry_point() -> None:
    import cluster_sim
    from cluster_sim.run import RunResult, check, simulate
    from cluster_sim.spec import JobSpec, load_spec

    assert cluster_sim.simulate is simulate and cluster_sim.check is check and cluster_sim.RunResult is RunResult
    assert cluster_sim.load_spec is load_spec and cluster_sim.JobSpec is JobSpec


def _imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    return mods


def test_backends_are_siblings() -> None:
    """Neither execution backend imports the other; both sit on the run layer."""
    pkg = ROOT / "cluster_sim"
    for f in (pkg / "asyncmode").glob("*.py"):
        assert not any(m.startswith("cluster_sim.engine") for m in _imports(f)), f
    for f in (pkg / "engine").glob("*.py"):
        assert not any(m.startswith("cluster_sim.asyncmode") for m in _imports(f)), f
    for f in (pkg / "runtime").glob("*.py"):
        assert not any(m.startswith(("cluster_sim.engine", "cluster_sim.asyncmode")) for m in _imports(f)), f


def test_resume_refused_before_tensorflow(small_cobahh: Path, tmp_path: Path, no_tf: dict[str, str]) -> None:
    """A resume that cannot work (another network, or no checkpoint) is refused before TensorFlow
    is imported."""
    out = tmp_path / "c"
    cli("run", str(small_cobahh), "--out", str(out), "--duration", "30", "--checkpoint-every", "20", "-q", check=True)
    env = no_tf
    other = cli("run", str(small_cobahh), "--out", str(out), "--resume", "-q", "--set", "simulation.seed=4", env=env)
    assert other.returncode == 2 and "different network" in other.stderr, other.stderr[-2000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    none = cli("run", str(small_cobahh), "--out", str(empty), "--resume", "-q", env=env)
    assert none.returncode == 2 and "no checkpoint to resume from" in none.stderr, none.stderr[-2000:]


def test_requeued_run_reports_total_wall(small_cobahh: Path, tmp_path: Path) -> None:
    """run.json after a resume: this incarnation's wall, the total over incarnations, restarts."""
    out = tmp_path / "r"
    cli("run", str(small_cobahh), "--out", str(out), "--duration", "40", "--checkpoint-every", "20", "-q", check=True)
    first = json.loads((out / "run.json").read_text())
    cli("run", str(small_cobahh), "--out", str(out), "--duration", "60", "--resume", "-q", check=True)
    info = json.loads((out / "run.json").read_text())
    assert info["restarts"] == 1 and len(info["incarnations"]) == 2
    assert info["incarnations"][0]["until_ms"] == pytest.approx(20.0)
    assert info["wall_seconds_total"] == pytest.approx(sum(i["wall_seconds"] for i in info["incarnations"]))
    assert info["wall_seconds_total"] > info["wall_seconds"] > 0
    assert first["restarts"] == 0 and first["wall_seconds_total"] == pytest.approx(first["wall_seconds"])


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_resume_refuses_truncated_spike_file(small_cobahh: Path, tmp_path: Path, keep: float) -> None:
    """A resume must not copy rows that are no longer on disk (they read back as t = 0, node 0)."""
    out = tmp_path / "t"
    cli("run", str(small_cobahh), "--out", str(out), "--duration", "40", "--checkpoint-every", "30", "-q", check=True)
    path = out / "spikes.h5"
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(int(size * keep))
    proc = cli("run", str(small_cobahh), "--out", str(out), "--duration", "60", "--resume", "-q")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "spikes.h5 is damaged" in proc.stderr or "cannot be read back" in proc.stderr, proc.stderr[-2000:]
    assert "--overwrite" in proc.stderr


def test_disk_full_stops_the_run_with_readable_files(small_cobahh: Path, tmp_path: Path) -> None:
    """A full disk stops the run at the first flush that does not fit (exit 1, naming the file);
    the files hold complete chunks only and open with plain h5py."""
    import subprocess

    import h5py

    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], check=True)
    try:
        out = mnt / "r"
        proc = cli("run", str(small_cobahh), "--out", str(out), "--duration", "300", "-q")
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "disk is full" in proc.stderr and "spikes.h5" in proc.stderr
        assert "Segmentation" not in proc.stderr and "Traceback" not in proc.stderr
        with h5py.File(out / "spikes.h5", "r") as f:
            for pop in f["spikes"]:
                t = f[f"spikes/{pop}/timestamps"][:]
                assert t.size == f[f"spikes/{pop}/node_ids"].shape[0]
                assert t.size == 0 or (np.all(np.isfinite(t)) and t.min() > 0), "no fill values"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_sigterm_while_writing_run_json_still_exits_0(small_cobahh: Path, tmp_path: Path) -> None:
    """The CLI's stop handler stays until the process ends: a SIGTERM after the interval loop
    (here: while run.json is written) is noted, not fatal; the completed run exits 0."""
    import subprocess
    import sys

    out = tmp_path / "late"
    script = f"""
import os, signal, sys
import cluster_sim.record.checkpoint as ck
real = ck.atomic_write_json
def late_signal(path, data):
    if path.name == "run.json":
        os.kill(os.getpid(), signal.SIGTERM)
    real(path, data)
ck.atomic_write_json = late_signal
from cluster_sim.cli import main
sys.exit(main(["run", {str(small_cobahh)!r}, "--out", {str(out)!r}, "--duration", "20", "-q"]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert json.loads((out / "run.json").read_text())["status"] == "completed"


def test_second_run_into_the_same_folder_is_refused(small_cobahh: Path, tmp_path: Path) -> None:
    """Two runs started at once into one --out: the second exits 2 naming the holder; the first
    completes. The same for two --resume of one folder."""
    import subprocess
    import sys
    import time

    from cluster_sim.record.lock import LOCK_NAME

    out = tmp_path / "shared"
    for extra in (["--overwrite"], ["--resume"]):
        # a checkpoint to resume from (a fresh --overwrite run removes the older one)
        cli("run", str(small_cobahh), "--out", str(out), "--duration", "20", "--checkpoint-every", "10", "--overwrite", "-q",
            check=True)
        args = ["run", str(small_cobahh), "--out", str(out), "-q", "--duration", "150", *extra]
        first = subprocess.Popen([sys.executable, "-m", "cluster_sim.cli", *args], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not (out / LOCK_NAME).exists() and time.time() < deadline:
            time.sleep(0.02)
        assert (out / LOCK_NAME).exists(), "the first run holds a lock while it runs"
        second = cli(*args)
        assert second.returncode == 2, second.stderr[-2000:]
        assert str(first.pid) in second.stderr, second.stderr[-2000:]
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-2000:]
        assert not (out / LOCK_NAME).exists(), "released at the end"


def test_spec_parsing_is_inert_check_refuses() -> None:
    """Parsing a spec computes nothing about the machine; the memory estimate is check's, per rank."""
    import tomllib

    from cluster_sim.errors import ConfigError
    from cluster_sim.run.check import check
    from cluster_sim.spec import parse_spec
    from tests.conftest import SMALL_COBAHH

    spec = parse_spec(tomllib.loads(SMALL_COBAHH), ["populations.E.count=2000000000"])
    with pytest.raises(ConfigError) as e:
        check(spec, 1)
    assert e.value.key == "populations.E.count" and "GiB" in str(e.value)


def test_out_of_memory_says_so_with_the_estimate(small_cobahh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An allocation failure inside a backend becomes a RunError with the estimate and the fix."""
    import cluster_sim.run.layer as layer
    from cluster_sim.errors import RunError
    from cluster_sim.spec import load_spec

    class Exhausted:
        mode = "bsp"

        def __init__(self, ctx: object) -> None:
            pass

        def prepare(self) -> None:
            pass

        def run(self) -> str:
            raise MemoryError("cannot allocate")

        def simulated_ms(self) -> float:
            return 0.0

    monkeypatch.setattr(layer, "_backend", Exhausted)
    with pytest.raises(RunError) as e:
        layer.simulate(load_spec(small_cobahh), tmp_path / "oom", progress=False)
    msg = str(e.value)
    assert "out of memory" in msg and "GiB per rank" in msg and "SLURM --mem" in msg


def test_overwrite_drops_the_old_checkpoint(small_cobahh: Path, tmp_path: Path) -> None:
    """--overwrite starts afresh: an older run's checkpoint cannot be resumed into the new files."""
    out = tmp_path / "o"
    cli("run", str(small_cobahh), "--out", str(out), "--duration", "30", "--checkpoint-every", "20", "-q", check=True)
    assert (out / "checkpoint" / "manifest.json").exists()
    cli("run", str(small_cobahh), "--out", str(out), "--duration", "10", "--overwrite", "-q", check=True)
    assert not (out / "checkpoint").exists()
    proc = cli("run", str(small_cobahh), "--out", str(out), "--duration", "30", "--resume", "-q")
    assert proc.returncode == 2 and "no checkpoint to resume from" in proc.stderr, proc.stderr[-2000:]
