"""After SIGKILL the result files carry the SWMR writer's open-for-write flag: plain HDF5 opens
and libsonata fail. ``cluster-sim repair`` (and info/plot) leave files any tool opens, and a
repaired run still resumes to the same spikes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cluster_sim.errors import ConfigError
from cluster_sim.record.lock import OutputLock
from cluster_sim.record.repair import needs_repair, repair
from cluster_sim.record.spikes import read_spikes
from tests.conftest import ROOT, SMALL_COBAHH, cli
from tests.sonata_check import assert_sonata_readable

KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
import numpy as np
from cluster_sim.record.spikes import SpikeWriter
from cluster_sim.record.traces import TraceWriter
out = Path(sys.argv[1])
w = SpikeWriter(out / "spikes.h5", {"E": 10, "I": 4}, {"seed": 1})
r = TraceWriter(out / "report_v.h5", "E", "v", np.array([0, 3]), 0.5, "mV")
w.add("E", np.array([1.0, 2.0, 2.0]), np.array([3, 4, 9])); w.add("I", np.array([1.5]), np.array([2]))
r.add(np.full((4, 2), -65.0))
w.flush(); r.flush()
# rows past the last complete write: the extent grew but the values are fill (t = 0, node 0)
ts, ids = w.groups["E"]["timestamps"], w.groups["E"]["node_ids"]
ts.resize(5, axis=0); ids.resize(5, axis=0)
w.f.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_writer(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_repair_makes_files_open_plainly_and_drops_fill_rows(tmp_path: Path) -> None:
    _killed_writer(tmp_path)
    with pytest.raises(OSError, match="already open for write"):  # the failure, reproduced
        h5py.File(tmp_path / "spikes.h5", "r")
    assert needs_repair(tmp_path) == [tmp_path / "spikes.h5", tmp_path / "report_v.h5"]
    results = {r.path.name: r for r in repair(tmp_path)}
    assert results["spikes.h5"].rows_dropped["spikes/E/timestamps"] == 2
    assert needs_repair(tmp_path) == []
    assert assert_sonata_readable(tmp_path) == {"E": 3, "I": 1}
    with h5py.File(tmp_path / "spikes.h5", "r") as f:
        np.testing.assert_array_equal(f["spikes/E/timestamps"][:], [1.0, 2.0, 2.0])
        np.testing.assert_array_equal(f["spikes/E/node_ids"][:], [3, 4, 9])
        assert f.attrs["seed"] == 1 and f["spikes/E"].attrs["n_nodes"] == 10
    with h5py.File(tmp_path / "report_v.h5", "r") as f:
        assert f["report/E/data"].shape == (4, 2)
        np.testing.assert_allclose(f["report/E/mapping/time"][:], [0.5, 2.5, 0.5])
    # a second repair finds nothing to do
    assert not any(r.repaired for r in repair(tmp_path))


def test_info_repairs_and_a_live_run_is_left_alone(tmp_path: Path) -> None:
    _killed_writer(tmp_path)
    with OutputLock(tmp_path):  # a live holder: repair refuses, info reads with SWMR
        with pytest.raises(ConfigError, match="in use by"):
            repair(tmp_path)
        proc = cli("info", str(tmp_path), "--json", check=True)
        assert json.loads(proc.stdout)["populations"]["E"]["n_spikes"] == 5  # as on disk, fill rows included
        assert needs_repair(tmp_path)
    proc = cli("info", str(tmp_path), "--json", check=True)
    assert "repaired" in proc.stderr
    assert json.loads(proc.stdout)["populations"]["E"]["n_spikes"] == 3
    assert needs_repair(tmp_path) == []


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("job") / "small_cobahh.toml"
    path.write_text(SMALL_COBAHH)
    return path


def test_sigkilled_run_repaired_then_resumed_is_identical(job: Path, tmp_path: Path) -> None:
    ref, out = tmp_path / "ref", tmp_path / "killed"
    duration = "600"
    cli("run", str(job), "--out", str(ref), "--duration", duration, "-q", check=True)
    proc = subprocess.Popen([sys.executable, "-m", "cluster_sim.cli", "run", str(job), "--out", str(out), "-q",
                             "--duration", duration, "--checkpoint-every", "20"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (out / "checkpoint" / "manifest.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "run.json").exists(), "the run finished before it was killed; the test proves nothing"
    assert needs_repair(out), "a SIGKILLed run's spikes.h5 should need repair"
    rep = cli("repair", str(out), check=True)
    assert "spikes.h5: repaired" in rep.stdout
    assert needs_repair(out) == []
    assert_sonata_readable(out)
    cli("run", str(job), "--out", str(out), "--duration", duration, "--resume", "-q", check=True)
    assert_sonata_readable(out)
    a, b = read_spikes(out / "spikes.h5"), read_spikes(ref / "spikes.h5")
    for pop in a:
        np.testing.assert_array_equal(a[pop][0], b[pop][0])
        np.testing.assert_array_equal(a[pop][1], b[pop][1])


def test_repair_refuses_a_folder_without_results(tmp_path: Path) -> None:
    proc = cli("repair", str(tmp_path))
    assert proc.returncode == 2 and "has no spikes.h5" in proc.stderr
