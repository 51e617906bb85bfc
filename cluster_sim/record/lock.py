"""One run (or resume, or repair) at a time per output folder.

The lock is a file created with ``O_CREAT | O_EXCL``, atomic on local file systems and on NFS
(v3 and later) and Lustre, unlike ``flock``/``fcntl`` locks, which some cluster mounts ignore. It
holds the holder's host, pid, process start time and SLURM job id as JSON, so a second run can
say who holds the folder. A lock whose holder is on this host and no longer alive (or whose pid
now belongs to a newer process) is stale and taken over; a holder on another host cannot be
checked from here, so the error names it and how to clear the lock by hand.

Usage::

    with OutputLock(out_dir, purpose="run"):
        ...  # write spikes.h5, checkpoints, run.json
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from cluster_sim.errors import ConfigError

LOCK_NAME = ".cluster-sim.lock"
# A lock file still empty after this long belongs to a process that died between creating and
# writing it (a few microseconds normally).
EMPTY_LOCK_GRACE_S = 30.0


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat start time: tells a reused pid from the holder
    slurm_job_id: str
    purpose: str
    since: float  # time.time() when taken

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job_id}" if self.slurm_job_id else ""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"a cluster-sim {self.purpose} (host {self.host}, pid {self.pid}{job}, since {when})"


def _start_ticks(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot (0 where /proc is not available)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # comm (field 2) may contain spaces and parentheses: split after the last ')'
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _me(purpose: str) -> LockHolder:
    pid = os.getpid()
    return LockHolder(socket.gethostname(), pid, _start_ticks(pid), os.environ.get("SLURM_JOB_ID", ""), purpose, time.time())


def read_holder(out_dir: str | Path) -> LockHolder | None:
    """Who holds ``out_dir`` (None when nobody, or the lock file is empty/unreadable)."""
    return read_holder_file(Path(out_dir) / LOCK_NAME)


def read_holder_file(path: Path) -> LockHolder | None:
    try:
        d = json.loads(Path(path).read_text())
        return LockHolder(str(d["host"]), int(d["pid"]), int(d.get("start_ticks", 0)), str(d.get("slurm_job_id", "")),
                          str(d.get("purpose", "run")), float(d.get("since", 0.0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_stale(holder: LockHolder | None, lock_path: Path) -> bool:
    """True when the holder is certainly gone: same host and its pid is dead or reused, or the
    lock file stayed empty/garbled past the grace time."""
    if holder is None:
        try:
            return time.time() - lock_path.stat().st_mtime > EMPTY_LOCK_GRACE_S
        except FileNotFoundError:
            return True
    if holder.host != socket.gethostname():
        return False
    if not _alive(holder.pid):
        return True
    ticks = _start_ticks(holder.pid)
    return bool(holder.start_ticks and ticks and ticks != holder.start_ticks)


def held_by_live_process(out_dir: str | Path) -> LockHolder | None:
    """The holder of ``out_dir`` if a lock exists and is not stale (for readers deciding whether
    a folder may be repaired in place)."""
    path = Path(out_dir) / LOCK_NAME
    if not path.exists():
        return None
    holder = read_holder(out_dir)
    if is_stale(holder, path):
        return None
    return holder or LockHolder("?", 0, 0, "", "run (lock being written)", path.stat().st_mtime)


class OutputLock:
    """Exclusive lock on an output folder; a ``ConfigError`` (exit 2) names the holder."""

    def __init__(self, out_dir: str | Path, purpose: str = "run", key: str = "--out") -> None:
        self.dir, self.purpose, self.key = Path(out_dir), purpose, key
        self.path = self.dir / LOCK_NAME
        self._token: str | None = None

    def acquire(self) -> "OutputLock":
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # at most: find a stale lock, remove it, create ours
            me = _me(self.purpose)
            payload = json.dumps(asdict(me)).encode()
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_holder(self.dir)
                if is_stale(holder, self.path):
                    self._remove_stale(holder)
                    continue
                who = holder.describe() if holder else "another cluster-sim process (its lock is being written)"
                raise ConfigError(self.key, str(self.dir), f"is in use by {who}",
                                  f"wait for it to finish or choose another {self.key}; if that process is gone "
                                  f"(e.g. its node died), delete {self.path}") from None
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._token = payload.decode()
            return self
        raise ConfigError(self.key, str(self.dir), "lock could not be taken (others keep replacing it)",
                          f"make sure only one cluster-sim uses this folder, then delete {self.path}")

    def _remove_stale(self, holder: LockHolder | None) -> None:
        """Move the stale lock aside, then check it is still the one judged stale: two processes
        clearing the same stale lock must not delete the fresh lock the faster one just took."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved = read_holder_file(aside)
        if moved != holder:  # someone else's fresh lock: put it back (unless yet another exists)
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        if self._token is None:
            return
        try:
            if self.path.read_text() == self._token:  # never delete a lock that is not ours
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._token = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

