"""Damaged checkpoints: refused with a clear message, or the previous complete one is used."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.conftest import cli
from cluster_sim.record.spikes import read_spikes


def _legs(job: Path, out: Path) -> None:
    cli("run", str(job), "--out", str(out), "--duration", "50", "--checkpoint-every", "20", "-q", check=True)


def test_damaged_newest_checkpoint_falls_back_to_previous(small_cobahh: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    cli("run", str(small_cobahh), "--out", str(ref), "--duration", "70", "-q", check=True)
    out = tmp_path / "legs"
    _legs(small_cobahh, out)
    cdir = out / "checkpoint"
    manifest = json.loads((cdir / "manifest.json").read_text())
    prev = json.loads((cdir / "manifest.prev.json").read_text())
    assert manifest["simulated_ms"] == 40.0 and prev["simulated_ms"] == 20.0
    newest = cdir / manifest["files"][0]
    with open(newest, "r+b") as fh:  # a truncated rank file (disk full, killed copy)
        fh.truncate(newest.stat().st_size // 2)
    (cdir / ".step000000000600.rank0.npz.tmp123").write_bytes(b"half-written")
    proc = cli("run", str(small_cobahh), "--out", str(out), "--duration", "70", "--resume", "-q")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "damaged" in proc.stderr and "previous one at 20 ms" in proc.stderr
    assert not list(cdir.glob(".*.tmp*")), "temporary files of a failed checkpoint are removed"
    assert json.loads((out / "run.json").read_text())["resumed_from_ms"] == 20.0
    a, b = read_spikes(ref / "spikes.h5"), read_spikes(out / "spikes.h5")
    for pop in a:
        assert np.array_equal(a[pop][0], b[pop][0]) and np.array_equal(a[pop][1], b[pop][1]), pop


def test_damaged_checkpoint_without_fallback_is_refused(small_cobahh: Path, tmp_path: Path) -> None:
    out = tmp_path / "one"
    cli("run", str(small_cobahh), "--out", str(out), "--duration", "30", "--checkpoint-every", "20", "-q", check=True)
    (out / "checkpoint" / "manifest.json").write_text("{not json")
    proc = cli("run", str(small_cobahh), "--out", str(out), "--duration", "70", "--resume", "-q")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"the checkpoint in {out} is damaged" in proc.stderr and "not valid JSON" in proc.stderr
