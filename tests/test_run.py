"""End-to-end runs through the real CLI: outputs in SONATA layout, run.json, exit statuses,
checkpoint/resume bitwise identity, SIGKILL leaves readable files, SIGTERM checkpoints."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cluster_sim.record.sonata import read_sorting
from cluster_sim.record.spikes import read_spikes
from tests.conftest import ROOT, cli

LONG_MS = 3000.0


def _spikes_equal(a: Path, b: Path) -> None:
    sa, sb = read_spikes(a / "spikes.h5"), read_spikes(b / "spikes.h5")
    assert sa.keys() == sb.keys()
    for pop in sa:
        assert sa[pop][0].size > 0, f"{pop}: no spikes, the comparison would prove nothing"
        np.testing.assert_array_equal(sa[pop][1], sb[pop][1], err_msg=f"{pop} node_ids differ")
        np.testing.assert_array_equal(sa[pop][0], sb[pop][0], err_msg=f"{pop} timestamps differ (not bitwise)")


@pytest.fixture(scope="module")
def job(small_cobahh_job: Path) -> Path:
    return small_cobahh_job


@pytest.fixture(scope="module")
def reference_long(job: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref_long")
    cli("run", str(job), "--out", str(out), "--duration", str(LONG_MS), "-q", check=True)
    return out


def test_run_writes_sonata_spikes_reports_and_run_json(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = cli("run", str(job), "--out", str(out), check=True)
    assert "spikes" in proc.stdout and "real-time factor" in proc.stdout, proc.stdout
    info = json.loads((out / "run.json").read_text())
    for key in ("n_neurons", "n_synapses", "n_spikes", "simulated_ms", "wall_seconds", "steps_per_neuron", "ranks", "mode", "phases"):
        assert key in info, key
    assert info["mode"] == "bsp" and info["ranks"] == 1 and info["n_neurons"] == 400
    assert info["simulated_ms"] == 100.0 and info["steps_per_neuron"] == 1000
    assert {"startup", "build", "integrate", "deliver", "io"} <= set(info["phases"])
    assert info["n_spikes"] > 100, "the small network should be active"
    with h5py.File(out / "spikes.h5", "r") as f:
        total = 0
        for pop, n in (("E", 320), ("I", 80)):
            g = f["spikes"][pop]
            assert read_sorting(g) == "by_time"
            ts, ids = g["timestamps"], g["node_ids"]
            assert ts.dtype == np.float64 and ids.dtype == np.uint64 and ts.attrs["units"] == "ms"
            t = ts[:]
            assert np.all(np.diff(t) >= 0) and t.min() > 0 and t.max() <= 100.0
            assert ids[:].max() < n
            total += t.size
        assert total == info["n_spikes"]
        assert json.loads(f.attrs["spec"])["name"] == "small_cobahh"
    with h5py.File(out / "report_vE.h5", "r") as f:
        data = f["report/E/data"][:]
        assert data.shape == (200, 3)  # 100 ms sampled every 0.5 ms, 3 neurons
        assert list(f["report/E/mapping/node_ids"][:]) == [0, 5, 7]
        assert np.allclose(f["report/E/mapping/time"][:], [0.5, 100.5, 0.5])
        assert -100 < data.min() and data.max() < 60
    proc = cli("info", str(out), check=True)
    assert "E:" in proc.stdout and "Hz" in proc.stdout and "timers" in proc.stdout
    proc = cli("plot", str(out), check=True)
    png = Path(proc.stdout.strip())
    assert png.exists() and png.stat().st_size > 20_000


def test_existing_output_needs_resume_or_overwrite(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cli("run", str(job), "--out", str(out), "--duration", "5", "-q", check=True)
    proc = cli("run", str(job), "--out", str(out), "--duration", "5", "-q")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    proc = cli("run", str(job), "--out", str(tmp_path / "fresh"), "--resume")
    assert proc.returncode == 2 and "no checkpoint" in proc.stderr


def test_resume_after_sigkill_is_bitwise_identical(job: Path, reference_long: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cluster_sim.cli", "run", str(job), "--out", str(out), "-q",
                             "--duration", str(LONG_MS), "--checkpoint-every", "100"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (out / "checkpoint" / "manifest.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "run.json").exists(), "the run finished before it could be killed; the test proves nothing"
    # The killed run's spikes.h5 is readable up to the last flushed chunk.
    partial = read_spikes(out / "spikes.h5")
    n_partial = sum(t.size for t, _ in partial.values())
    ref = read_spikes(reference_long / "spikes.h5")
    n_ref = sum(t.size for t, _ in ref.values())
    assert 0 < n_partial < n_ref
    for pop, (t, ids) in partial.items():  # the partial file is a prefix of the full result
        np.testing.assert_array_equal(t, ref[pop][0][: t.size])
    proc = cli("run", str(job), "--out", str(out), "--duration", str(LONG_MS), "--resume", "-q", check=True)
    _spikes_equal(reference_long, out)
    info = json.loads((out / "run.json").read_text())
    assert info["resumed_from_ms"] > 0 and info["status"] == "completed"


def test_resume_from_checkpoint_with_longer_duration(job: Path, tmp_path: Path) -> None:
    """A run that stopped after its checkpoint (here: shorter first leg) resumes to the same spikes."""
    ref, out = tmp_path / "ref", tmp_path / "legs"
    cli("run", str(job), "--out", str(ref), "--duration", "100", "-q", check=True)
    cli("run", str(job), "--out", str(out), "--duration", "60", "--checkpoint-every", "30", "-q", check=True)
    cli("run", str(job), "--out", str(out), "--duration", "100", "--resume", "-q", check=True)
    _spikes_equal(ref, out)
    assert json.loads((out / "run.json").read_text())["resumed_from_ms"] == pytest.approx(30.0)


def test_resume_refuses_a_different_network(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "a"
    cli("run", str(job), "--out", str(out), "--duration", "20", "--checkpoint-every", "10", "-q", check=True)
    proc = cli("run", str(job), "--out", str(out), "--duration", "40", "--resume", "--set", "simulation.seed=9")
    assert proc.returncode == 2 and "different network" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_checkpoints_and_exits_75_then_resumes(sig: int, job: Path, reference_long: Path, tmp_path: Path) -> None:
    out = tmp_path / "signalled"
    proc = subprocess.Popen([sys.executable, "-m", "cluster_sim.cli", "run", str(job), "--out", str(out),
                             "--duration", str(LONG_MS)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while True:  # wait until integration is under way (first chunk flushed)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        if (out / "spikes.h5").exists():
            try:
                if sum(t.size for t, _ in read_spikes(out / "spikes.h5").values()) > 0:
                    break
            except OSError:
                pass
        time.sleep(0.05)
    t_sig = time.time()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 75, stderr.decode()[-2000:]
    assert time.time() - t_sig < 30
    assert (out / "checkpoint" / "manifest.json").exists()
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "checkpointed" and 0 < info["simulated_ms"] < LONG_MS
    assert b"--resume" in stderr
    cli("run", str(job), "--out", str(out), "--duration", str(LONG_MS), "--resume", "-q", check=True)
    _spikes_equal(reference_long, out)


def test_unstable_integration_fails_with_exit_1(job: Path, tmp_path: Path) -> None:
    proc = cli("run", str(job), "--out", str(tmp_path / "x"), "--duration", "50", "-q",
               "--set", 'integrator.method="euler"', "--set", "integrator.dt_ms=0.5", "--set", "projections.II.delay_ms=1.0")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "non-finite" in proc.stderr and "dt_ms" in proc.stderr and "params" in proc.stderr
    # Every variable is checked after every 1 ms interval: caught at its first interval (a check
    # of one variable every 16 intervals, as before, reported it at t >= 16 ms).
    t_bad = float(re.search(r"by t = ([0-9.]+) ms", proc.stderr).group(1))
    assert t_bad <= 5.0, proc.stderr[-1000:]


def test_float32_agrees_statistically_with_float64(job: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "f64", tmp_path / "f32"
    cli("run", str(job), "--out", str(a), "--duration", "300", "-q", check=True)
    cli("run", str(job), "--out", str(b), "--duration", "300", "-q", "--set", 'integrator.precision="float32"', check=True)
    ra = json.loads((a / "run.json").read_text())["rates_hz"]
    rb = json.loads((b / "run.json").read_text())["rates_hz"]
    for pop in ra:
        assert ra[pop] > 5 and abs(rb[pop] - ra[pop]) / ra[pop] < 0.25, (ra, rb)
    # the first spikes (before chaos amplifies rounding) agree to float32 precision
    sa, sb = read_spikes(a / "spikes.h5")["E"], read_spikes(b / "spikes.h5")["E"]
    early = sa[0] < 3.0
    assert early.sum() > 0
    np.testing.assert_allclose(sb[0][: early.sum()], sa[0][early], atol=1e-3)


def test_progress_line_shows_time_rate_and_eta() -> None:
    import io

    from cluster_sim.runtime.progress import Progress

    buf = io.StringIO()
    p = Progress(1000.0, enabled=True, stream=buf)
    p.update(250.0, 42, force=True)
    p.close()
    line = buf.getvalue()
    assert "250.0/1000 ms" in line and "ms/s" in line and "ETA" in line and "spikes 42" in line
    quiet = io.StringIO()
    Progress(1000.0, stream=quiet).update(10.0, 1, force=True)  # not a terminal: silent
    assert quiet.getvalue() == ""
