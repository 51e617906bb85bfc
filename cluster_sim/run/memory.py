"""How much memory a run needs per rank, and how much this process may use.

The estimate counts state, integrator stages and buffers per neuron, and the synapse arrays
(source id, weight, delay, plus the outgoing copy) per synapse; a rank holds 1/ranks of each.
What is available is the smallest of: the kernel's MemAvailable, the cgroup limit of this
process (v2 ``memory.max``, v1 ``memory.limit_in_bytes``, minus what the group already uses:
what SLURM and containers enforce), and the rlimits RLIMIT_AS / RLIMIT_DATA (minus what this
process already maps). Node-wide limits are shared by the ranks of a node; rlimits are per rank.
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cluster_sim.errors import ConfigError

if TYPE_CHECKING:
    from cluster_sim.spec.schema import JobSpec

UNLIMITED = 1 << 62
HEADROOM = 0.8  # refuse above this fraction of what is available: Python, TF and MPI need the rest


def neuron_bytes(count: int, n_vars: int) -> float:
    return count * (n_vars + 2) * 8 * 6  # state + RK4 stages + buffers


def synapse_bytes(mean_indegree: float, n_targets: int) -> float:
    return mean_indegree * n_targets * 24  # source id, weight, delay, plus the outgoing copy


def _mean_indegree(spec: "JobSpec", proj: object) -> float:
    c = proj.connect  # type: ignore[attr-defined]
    n_src = spec.population(proj.source).count  # type: ignore[attr-defined]
    n_tgt = spec.population(proj.target).count  # type: ignore[attr-defined]
    if c.rule == "bernoulli":
        return c.p * n_src
    if c.rule == "fixed_indegree":
        return float(c.indegree)
    if c.rule == "all_to_all":
        return float(n_src)
    return len(c.pairs) / max(n_tgt, 1)


def estimate_bytes(spec: "JobSpec", ranks: int = 1) -> float:
    """Bytes one of ``ranks`` ranks needs for the network of ``spec`` (neurons split evenly)."""
    from cluster_sim.models import get_neuron_model

    total = sum(neuron_bytes(p.count, len(get_neuron_model(p.model).variables)) for p in spec.populations)
    total += sum(synapse_bytes(_mean_indegree(spec, j), spec.population(j.target).count) for j in spec.projections)
    return total / max(1, ranks)


@dataclass(frozen=True)
class Available:
    bytes: int
    source: str  # which limit is the smallest, for the message
    per_process: bool  # an rlimit (each rank has its own) rather than a node-wide limit


def _meminfo(path: str = "/proc/meminfo") -> int:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return UNLIMITED


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def cgroup_available(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> tuple[int, str]:
    """(limit - usage, description) of the tightest memory cgroup around this process; the
    group's own directory and every ancestor count (a parent's limit applies to its children).
    Where the cgroup namespace makes the mount point the group itself, the mount root is used."""
    best, what = UNLIMITED, ""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return best, what
    base = Path(root)
    candidates: list[tuple[Path, str, str, str]] = []
    for line in lines:
        hid, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        rel = path.strip("/")
        if hid == "0" and controllers == "":  # v2 unified hierarchy
            mount = base / "unified" if (base / "unified" / "cgroup.controllers").exists() and not (base / "cgroup.controllers").exists() else base
            candidates.append((mount, rel, "memory.max", "memory.current"))
        elif "memory" in controllers.split(","):
            candidates.append((base / "memory", rel, "memory.limit_in_bytes", "memory.usage_in_bytes"))
    for mount, rel, limit_name, usage_name in candidates:
        parts = Path(rel).parts if rel else ()
        dirs = [mount.joinpath(*parts[:k]) for k in range(len(parts), -1, -1)]
        for d in dirs:
            limit = _read_int(d / limit_name)
            if limit is None or limit >= UNLIMITED or limit >= (1 << 60):
                continue
            usage = _read_int(d / usage_name) or 0
            free = max(0, limit - usage)
            if free < best:
                best, what = free, f"cgroup {d / limit_name} = {limit / 2**30:.2f} GiB, {usage / 2**30:.2f} GiB used"
    return best, what


def _vm_field(name: str) -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rlimit_available() -> tuple[int, str]:
    best, what = UNLIMITED, ""
    for res, name, used_field in ((resource.RLIMIT_AS, "RLIMIT_AS (ulimit -v)", "VmSize"),
                                  (resource.RLIMIT_DATA, "RLIMIT_DATA (ulimit -d)", "VmData")):
        soft, _ = resource.getrlimit(res)
        if soft == resource.RLIM_INFINITY or soft < 0:
            continue
        free = max(0, soft - _vm_field(used_field))
        if free < best:
            best, what = free, f"{name} = {soft / 2**30:.2f} GiB"
    return best, what


def available_bytes() -> Available:
    """What this process may still allocate, and which limit says so."""
    options = [(_meminfo(), "MemAvailable in /proc/meminfo", False)]
    c, cw = cgroup_available()
    if cw:
        options.append((c, cw, False))
    r, rw = rlimit_available()
    if rw:
        options.append((r, rw, True))
    b, source, per = min(options, key=lambda o: o[0])
    return Available(int(b), source, per)


def _env_int(*names: str) -> int | None:
    for n in names:
        v = os.environ.get(n, "")
        if v.isdigit() and int(v) > 0:
            return int(v)
    return None


def launch_ranks() -> tuple[int, int]:
    """(ranks in the job, ranks on this node) from the launcher's environment; (1, 1) outside MPI."""
    world = _env_int("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE") or 1
    local = _env_int("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE") or 1
    return world, min(local, world)


def check_memory(spec: "JobSpec", ranks: int | None = None, local_ranks: int | None = None) -> None:
    """ConfigError (exit 2, before any compute) when the estimate exceeds what is available."""
    if os.environ.get("CLUSTER_SIM_SKIP_MEMORY_CHECK"):
        return
    world, local = launch_ranks()
    ranks = ranks or world
    local_ranks = local_ranks or local
    per_rank = estimate_bytes(spec, ranks)
    avail = available_bytes()
    need = per_rank if avail.per_process else per_rank * local_ranks
    if need > HEADROOM * avail.bytes:
        biggest = max(spec.populations, key=lambda p: p.count)
        who = "each rank" if avail.per_process or local_ranks == 1 else f"the {local_ranks} ranks of this node"
        raise ConfigError(f"populations.{biggest.name}.count", biggest.count,
                          f"the network needs about {need / 2**30:.2f} GiB for {who} ({ranks} rank(s) in all) but "
                          f"{avail.bytes / 2**30:.2f} GiB is available ({avail.source})",
                          "use fewer neurons or sparser connections, split the run across more ranks/nodes, "
                          "or raise the limit (SLURM --mem, ulimit); CLUSTER_SIM_SKIP_MEMORY_CHECK=1 skips this check")


def oom_message(spec: "JobSpec", ranks: int) -> str:
    """What to tell a user whose run ran out of memory (for the run layer's handler)."""
    avail = available_bytes()
    return (f"out of memory: the network was estimated at {estimate_bytes(spec, ranks) / 2**30:.2f} GiB per rank "
            f"({ranks} rank(s)); {avail.bytes / 2**30:.2f} GiB is available now ({avail.source}). "
            "Fix: use more ranks or nodes, fewer neurons or synapses, float32 precision, or ask for more memory "
            "(SLURM --mem).")
