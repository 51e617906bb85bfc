"""XLA's persistent compilation cache (runtime/xla_cache.py): on by default, where it lives, a
run populates it and the next one loads from it (run.json says so; the entries on disk are
the evidence, not timing), identical spikes with and without it, concurrent ranks, a cache that
cannot be written, and TensorFlow imported without Keras/matplotlib."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cluster_sim.errors import ConfigError
from cluster_sim.record.spikes import read_spikes
from cluster_sim.runtime.xla_cache import machine_fingerprint, resolve_root
from cluster_sim.spec import load_spec
from tests.conftest import ROOT, cli
from tests.mpi_util import mpirun


def _run(job: Path, out: Path, cache: Path | str, *extra: str, ranks: int = 1) -> dict:
    args = ("run", str(job), "--out", str(out), "--quiet", *extra)
    env = {"CLUSTER_SIM_XLA_CACHE": str(cache)}
    proc = mpirun(ranks, *args, env=env) if ranks > 1 else cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "XlaSerializedCacheEntry" not in proc.stderr  # XLA's harmless load lines are filtered
    return json.loads((out / "run.json").read_text())


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.pb"))


def _spikes(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return read_spikes(out / "spikes.h5")


def _same_spikes(a: Path, b: Path) -> None:
    sa, sb = _spikes(a), _spikes(b)
    assert sa.keys() == sb.keys()
    for pop in sa:
        for x, y in zip(sa[pop], sb[pop]):
            np.testing.assert_array_equal(x, y)


def test_where_the_cache_lives() -> None:
    home_default, src = resolve_root("auto", {"XDG_CACHE_HOME": "/x/cache"})
    assert (home_default, src) == (Path("/x/cache/cluster-sim/xla"), "default")
    assert resolve_root("auto", {"CLUSTER_SIM_XLA_CACHE": "/scratch/xla", "XDG_CACHE_HOME": "/x"}) == \
        (Path("/scratch/xla"), "env")
    assert resolve_root("auto", {"CLUSTER_SIM_XLA_CACHE": "off"}) == (None, "off")
    # the spec's own folder or "off" wins over the environment
    assert resolve_root("/proj/xla", {"CLUSTER_SIM_XLA_CACHE": "/s"}) == (Path("/proj/xla"), "spec")
    assert resolve_root("off", {"CLUSTER_SIM_XLA_CACHE": "/s"}) == (None, "off")


def test_entries_are_kept_apart_per_machine_and_flags() -> None:
    base = machine_fingerprint({})
    assert base.startswith("tf") and base == machine_fingerprint({})
    assert machine_fingerprint({"XLA_FLAGS": "--xla_cpu_enable_fast_math=true"}) != base
    # our own cache flag is not part of the key (it names a per-process folder)
    assert machine_fingerprint({"TF_XLA_FLAGS": "--tf_xla_persistent_cache_directory=/tmp/a"}) == base


def test_spec_key_is_checked(tmp_path: Path) -> None:
    job = tmp_path / "j.toml"
    job.write_text((ROOT / "jobs" / "cobahh.toml").read_text())
    assert load_spec(job).engine.xla_cache == "auto"
    assert load_spec(job, ['engine.xla_cache="off"']).engine.xla_cache == "off"
    with pytest.raises(ConfigError, match="engine.xla_cache"):
        load_spec(job, ['engine.xla_cache=""'])
    with pytest.raises(ConfigError, match="engine.xla_cache"):
        load_spec(job, ["engine.xla_cache=3"])


def test_second_run_loads_what_the_first_compiled(tmp_path: Path, small_cobahh_job: Path) -> None:
    cache = tmp_path / "cache"
    first = _run(small_cobahh_job, tmp_path / "a", cache)
    written = _entries(cache)
    assert first["xla_cache"]["enabled"] and first["xla_cache"]["source"] == "env"
    assert first["xla_cache"]["entries_written"] == len(written) > 0 and not first["xla_cache"]["hit"]
    assert first["xla_cache"]["entries_written_in_run"] == 0  # every kernel compiled during startup
    assert not list(cache.rglob(".*.tmp"))  # published by rename: no temporaries left behind
    mtimes = [p.stat().st_mtime_ns for p in written]

    second = _run(small_cobahh_job, tmp_path / "b", cache)
    assert second["xla_cache"]["hit"] and second["xla_cache"]["entries_written"] == 0
    assert second["xla_cache"]["entries_found"] == len(written)
    assert _entries(cache) == written and [p.stat().st_mtime_ns for p in written] == mtimes

    off = _run(small_cobahh_job, tmp_path / "c", cache, "--set", 'engine.xla_cache="off"')
    assert off["xla_cache"]["enabled"] is False and off["xla_cache"]["source"] == "off"
    _same_spikes(tmp_path / "a", tmp_path / "b")
    _same_spikes(tmp_path / "a", tmp_path / "c")


ASYNC_ONE = """
name = "async_one"
[simulation]
duration_ms = 20.0
mode = "async"
[integrator]
dt_ms = 0.01
[populations.N]
model = "hh_squid"
count = 2
[stimuli.step]
waveform = "step"
populations = ["N"]
amplitude_uA_cm2 = 10.0
start_ms = 2.0
stop_ms = 100.0
"""


def test_async_mode_uses_the_cache_too(tmp_path: Path) -> None:
    job = tmp_path / "async_one.toml"
    job.write_text(ASYNC_ONE)
    cache = tmp_path / "cache"
    first = _run(job, tmp_path / "a", cache)
    assert first["mode"] == "async" and first["xla_cache"]["entries_written"] > 0
    assert first["xla_cache"]["entries_written_in_run"] == 0  # every shape compiled during startup
    second = _run(job, tmp_path / "b", cache)
    assert second["xla_cache"]["hit"], second["xla_cache"]
    _same_spikes(tmp_path / "a", tmp_path / "b")


def test_two_ranks_share_one_cache(tmp_path: Path, small_cobahh_job: Path) -> None:
    """Both ranks compile the same shapes at the same moment and publish into one folder; the
    entries are complete (the next 2-rank run loads them all) and spikes are unchanged."""
    cache = tmp_path / "cache"
    cold = _run(small_cobahh_job, tmp_path / "a", cache, ranks=2)
    assert cold["xla_cache"]["entries_written"] >= len(_entries(cache)) > 0
    warm = _run(small_cobahh_job, tmp_path / "b", cache, ranks=2)
    assert warm["xla_cache"]["hit"], warm["xla_cache"]
    _same_spikes(tmp_path / "a", tmp_path / "b")


def test_a_cache_that_cannot_be_written_does_not_stop_the_run(tmp_path: Path, small_cobahh_job: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    info = _run(small_cobahh_job, tmp_path / "out", blocker / "xla")
    assert info["status"] == "completed"
    assert info["xla_cache"]["enabled"] is False and "a_file" in info["xla_cache"]["errors"][0]


def test_tensorflow_is_imported_without_keras_or_matplotlib() -> None:
    code = ("import sys\nfrom cluster_sim.runtime.tflog import import_tensorflow\nimport_tensorflow()\n"
            "heavy = [m for m in ('keras', 'matplotlib') if m in sys.modules]\nassert not heavy, heavy\n"
            "import tensorflow as tf\nassert tf.keras.layers.Dense  # still there, imported on first use\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_parent_runs_private_folder_is_not_taken_for_the_users(tmp_path: Path, monkeypatch) -> None:
    """A process started by a cluster-sim process (a test, `compare`) inherits its TF_XLA_FLAGS;
    the parent's private folder must not count as a user setting (it vanishes with the parent)."""
    from cluster_sim.runtime import xla_cache

    parent = tmp_path / "parent-staging"
    monkeypatch.setattr(xla_cache, "_staging", None)
    monkeypatch.setenv("TF_XLA_FLAGS", f"--tf_xla_persistent_cache_directory={parent}")
    monkeypatch.setenv("CLUSTER_SIM_XLA_STAGING", str(parent))
    monkeypatch.setenv("CLUSTER_SIM_XLA_CACHE", str(tmp_path / "cache"))
    got = xla_cache.configure()
    assert got.source == "env" and str(parent) not in os.environ["TF_XLA_FLAGS"]
    monkeypatch.setattr(xla_cache, "_staging", None)
    monkeypatch.setenv("TF_XLA_FLAGS", f"--tf_xla_persistent_cache_directory={parent}")
    monkeypatch.delenv("CLUSTER_SIM_XLA_STAGING")
    assert xla_cache.configure().source == "TF_XLA_FLAGS"  # the user's own flag is still left alone
