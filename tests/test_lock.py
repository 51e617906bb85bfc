"""The output-folder lock: a second process is refused while the first holds the folder, a
lock left by a dead process is taken over, a holder on another host is named."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster_sim.errors import ConfigError
from cluster_sim.record.lock import LOCK_NAME, OutputLock, held_by_live_process, read_holder

ROOT = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from cluster_sim.record.lock import OutputLock
with OutputLock(sys.argv[1], purpose="run"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""

TRY = """
import sys
from cluster_sim.errors import ConfigError
from cluster_sim.record.lock import OutputLock
try:
    with OutputLock(sys.argv[1], purpose="resume"):
        print("got it")
except ConfigError as e:
    print("refused:", e)
    sys.exit(2)
"""


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLURM_JOB_ID": "4242"}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_second_process_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    holder = _python(HOLD, str(tmp_path), "30")
    try:
        assert holder.stdout.readline().strip() == "locked"
        other = _python(TRY, str(tmp_path))
        out, err = other.communicate(timeout=30)
        assert other.returncode == 2, out + err
        assert f"pid {holder.pid}" in out and "SLURM job 4242" in out and socket.gethostname() in out
        with pytest.raises(ConfigError, match="in use by"):
            OutputLock(tmp_path).acquire()
        assert held_by_live_process(tmp_path).pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # the holder was SIGKILLed: its lock is stale (same host, pid dead) and is taken over
    assert (tmp_path / LOCK_NAME).exists()
    assert held_by_live_process(tmp_path) is None
    other = _python(TRY, str(tmp_path))
    out, err = other.communicate(timeout=30)
    assert other.returncode == 0 and "got it" in out, out + err
    assert not (tmp_path / LOCK_NAME).exists(), "a released lock is removed"


def test_lock_is_released_on_exit_and_on_error(tmp_path: Path) -> None:
    with OutputLock(tmp_path):
        assert read_holder(tmp_path).pid == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()
    with pytest.raises(RuntimeError):
        with OutputLock(tmp_path):
            raise RuntimeError("boom")
    assert not (tmp_path / LOCK_NAME).exists()


def test_reused_pid_is_stale(tmp_path: Path) -> None:
    """A live pid that started after the lock was written is not the holder."""
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start_ticks": 1,
                                                  "slurm_job_id": "", "purpose": "run", "since": time.time()}))
    with OutputLock(tmp_path):
        assert read_holder(tmp_path).start_ticks != 1


def test_holder_on_another_host_is_not_stolen(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "start_ticks": 0,
                                                  "slurm_job_id": "77", "purpose": "run", "since": time.time()}))
    with pytest.raises(ConfigError) as e:
        OutputLock(tmp_path).acquire()
    assert "node-elsewhere" in str(e.value) and "SLURM job 77" in str(e.value) and LOCK_NAME in str(e.value)


def test_empty_lock_of_a_crashed_creator(tmp_path: Path) -> None:
    lock = tmp_path / LOCK_NAME
    lock.write_text("")
    with pytest.raises(ConfigError):  # fresh: maybe being written right now
        OutputLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with OutputLock(tmp_path):
        pass


def test_only_one_of_many_concurrent_takers_wins(tmp_path: Path) -> None:
    procs = [_python(HOLD, str(tmp_path), "3") for _ in range(4)]
    results = [p.communicate(timeout=60) for p in procs]
    winners = [out for out, _ in results if out.startswith("locked")]
    assert len(winners) == 1, results
    assert all("in use by" in err for out, err in results if not out.startswith("locked"))
