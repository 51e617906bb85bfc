"""Talking to SLURM: sbatch/scancel, job states, and one watcher that batches state queries.

State comes from ``sacct --parsable2 --noheader`` when accounting works. Without slurmdbd
(``sacct`` errors out) the watcher falls back, once and for good, to a single
``scontrol -o show job`` call (which, like ``squeue``, keeps finished jobs for ``MinJobAge``).
Jobs the scheduler has forgotten are resolved from the ``exitcode`` file the batch script writes.
"""
from __future__ import annotations

import enum
import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from cluster_sim.errors import SubmissionError

log = logging.getLogger(__name__)

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(cmd: Sequence[str]) -> "subprocess.CompletedProcess[str]":
    exe = shutil.which(cmd[0])
    if exe is None:
        raise SubmissionError(f"{cmd[0]} not found on PATH: is this a SLURM login node? "
                              "(for the local test cluster: scripts/slurm_local.sh start)")
    return subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=60, check=False)


class JobState(enum.Enum):
    """SLURM job states (``squeue``/``sacct`` long names) plus UNKNOWN (not found anywhere)."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    RESIZING = "RESIZING"
    REQUEUED = "REQUEUED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    REQUEUE_FED = "REQUEUE_FED"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    CANCELLED = "CANCELLED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    REVOKED = "REVOKED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, text: str) -> "JobState":
        """``"CANCELLED by 0"`` -> CANCELLED; unrecognised text -> UNKNOWN."""
        word = text.strip().split(" ")[0].rstrip("+").upper() if text.strip() else ""
        aliases = {"OOM": "OUT_OF_MEMORY", "CA": "CANCELLED", "CD": "COMPLETED", "F": "FAILED",
                   "TO": "TIMEOUT", "NF": "NODE_FAIL", "PR": "PREEMPTED", "BF": "BOOT_FAIL",
                   "DL": "DEADLINE", "PD": "PENDING", "R": "RUNNING", "CG": "COMPLETING"}
        word = aliases.get(word, word)
        try:
            return cls(word)
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_failure(self) -> bool:
        return self in _FAILURES

    @property
    def is_terminal(self) -> bool:
        return self in _FAILURES or self in (JobState.COMPLETED, JobState.REVOKED)

    @property
    def is_active(self) -> bool:
        return not self.is_terminal and self is not JobState.UNKNOWN


_FAILURES = frozenset({JobState.FAILED, JobState.TIMEOUT, JobState.OUT_OF_MEMORY, JobState.NODE_FAIL,
                       JobState.PREEMPTED, JobState.CANCELLED, JobState.BOOT_FAIL, JobState.DEADLINE,
                       JobState.SPECIAL_EXIT})


@dataclass(frozen=True)
class JobInfo:
    """One job (or array task, ``"123_4"``) as the scheduler last reported it."""

    job_id: str
    state: JobState
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    restarts: int | None = None
    nodes: str = ""
    source: str = ""


def _exit_code(text: str) -> tuple[int | None, int | None]:
    m = re.match(r"^(\d+):(\d+)$", text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def parse_sacct(text: str) -> dict[str, JobInfo]:
    """Parse ``sacct -X --parsable2 --noheader --format=JobID,State,ExitCode,NodeList,Reason``."""
    out: dict[str, JobInfo] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        jid = parts[0]
        code, sig = _exit_code(parts[2])
        info = JobInfo(jid, JobState.parse(parts[1]), code, sig,
                       reason=parts[4] if len(parts) > 4 else "", nodes=parts[3] if len(parts) > 3 else "",
                       source="sacct")
        m = re.match(r"^(\d+)_\[(.+)\]$", jid)  # pending array range: 123_[2-5%2]
        if m:
            for idx in _expand_indices(m.group(2)):
                out[f"{m.group(1)}_{idx}"] = JobInfo(f"{m.group(1)}_{idx}", info.state, source="sacct")
        else:
            out[jid] = info
    return out


def _expand_indices(spec: str) -> list[int]:
    spec = spec.split("%")[0]
    idx: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            step = 1
            if ":" in b:
                b, s = b.split(":", 1)
                step = int(s)
            idx.extend(range(int(a), int(b) + 1, step))
        elif part.isdigit():
            idx.append(int(part))
    return idx


def parse_scontrol(text: str) -> dict[str, JobInfo]:
    """Parse ``scontrol -o show job`` (one job per line, ``Key=Value`` words)."""
    out: dict[str, JobInfo] = {}
    for line in text.splitlines():
        fields: dict[str, str] = {}
        for word in line.split(" "):
            if "=" in word:
                k, val = word.split("=", 1)
                fields.setdefault(k, val)
        if "JobId" not in fields:
            continue
        code, sig = _exit_code(fields.get("ExitCode", ""))
        restarts = int(fields["Restarts"]) if fields.get("Restarts", "").isdigit() else None
        common = dict(state=JobState.parse(fields.get("JobState", "")), exit_code=code, signal=sig,
                      reason=fields.get("Reason", ""), restarts=restarts, nodes=fields.get("NodeList", ""),
                      source="scontrol")
        ids = [fields["JobId"]]
        if fields.get("ArrayJobId") and fields.get("ArrayTaskId"):
            ids = [f"{fields['ArrayJobId']}_{i}" for i in _expand_indices(fields["ArrayTaskId"])]
        for jid in ids:
            out[jid] = JobInfo(jid, **common)  # type: ignore[arg-type]
        if len(ids) == 1 and ids[0] != fields["JobId"]:
            out.setdefault(fields["JobId"], JobInfo(fields["JobId"], **common))  # type: ignore[arg-type]
    return out


@dataclass
class Watcher:
    """Batches state queries for many jobs into one scheduler call per poll.

    ``sacct`` failures are logged, not raised; after one failure that says accounting is
    disabled (or any failure), the watcher uses ``scontrol`` from then on.
    """

    runner: Runner = _run
    use_sacct: bool = True
    last: dict[str, JobInfo] = field(default_factory=dict)

    def query(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        ids = sorted({str(j) for j in job_ids})
        if not ids:
            return {}
        found: dict[str, JobInfo] = {}
        if self.use_sacct:
            base = sorted({i.split("_")[0] for i in ids})
            try:
                cp = self.runner(["sacct", "-X", "--parsable2", "--noheader",
                                  "--format=JobID,State,ExitCode,NodeList,Reason", "-j", ",".join(base)])
                if cp.returncode == 0:
                    found = parse_sacct(cp.stdout)
                else:
                    log.info("sacct failed (%s); falling back to scontrol", (cp.stderr or cp.stdout).strip())
                    self.use_sacct = False
            except (OSError, subprocess.SubprocessError, SubmissionError) as e:
                log.info("sacct unavailable (%s); falling back to scontrol", e)
                self.use_sacct = False
        missing = [i for i in ids if i not in found]
        if missing:
            try:
                cp = self.runner(["scontrol", "-o", "show", "job"])
                if cp.returncode == 0:
                    sc = parse_scontrol(cp.stdout)
                    found.update({i: sc[i] for i in missing if i in sc})
                else:
                    log.warning("scontrol show job failed: %s", cp.stderr.strip())
            except (OSError, subprocess.SubprocessError, SubmissionError) as e:
                log.warning("scontrol unavailable: %s", e)
        result = {i: found.get(i, JobInfo(i, JobState.UNKNOWN)) for i in ids}
        self.last.update(result)
        return result

    def wait(self, job_ids: Iterable[str], *, timeout_s: float = 3600.0, delay_s: float = 5.0,
             until: Callable[[dict[str, JobInfo]], bool] | None = None) -> dict[str, JobInfo]:
        """Poll (backing off from 0.5 s to ``delay_s``) until every job is terminal or ``until``."""
        ids = list(job_ids)
        deadline = time.monotonic() + timeout_s
        pause = 0.5
        while True:
            infos = self.query(ids)
            if until(infos) if until else all(i.state.is_terminal for i in infos.values()):
                return infos
            if time.monotonic() > deadline:
                return infos
            time.sleep(pause)
            pause = min(delay_s, pause * 1.5)


def sbatch(script: Path, *, runner: Runner = _run, extra: Sequence[str] = ()) -> str:
    """Submit ``script`` with ``sbatch --parsable``; returns the job id."""
    cp = runner(["sbatch", "--parsable", *extra, str(script)])
    if cp.returncode != 0:
        raise SubmissionError(f"sbatch refused {script} (exit {cp.returncode}): {cp.stderr.strip() or cp.stdout.strip()}")
    first = cp.stdout.strip().splitlines()[-1] if cp.stdout.strip() else ""
    job_id = first.split(";")[0]
    if not re.match(r"^\d+$", job_id):
        raise SubmissionError(f"sbatch --parsable printed {cp.stdout!r}, not a job id")
    return job_id


def scancel(job_ids: Sequence[str], *, runner: Runner = _run) -> None:
    if not job_ids:
        return
    cp = runner(["scancel", *job_ids])
    if cp.returncode != 0:
        raise SubmissionError(f"scancel {' '.join(job_ids)} failed: {cp.stderr.strip()}")
