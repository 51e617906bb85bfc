"""Site profiles: what differs between clusters, as data (TOML), never as code.

A profile is looked up by name in, first to last (later wins):

1. the profiles shipped with the package (``cluster_sim/deploy/sites/*.toml``),
2. ``~/.config/cluster-sim/sites/*.toml``,
3. each directory in ``$CLUSTER_SIM_SITES`` (``os.pathsep``-separated).

Unknown keys are rejected with the list of valid keys, so a typo never silently falls back to a
default.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cluster_sim.deploy import _validate as v
from cluster_sim.errors import ConfigError

LAUNCHERS = ("srun", "mpiexec", "none")
GPU_REQUESTS = ("gpus-per-node", "gres", "none")
# Who maps ranks to GPUs: "engine" (each rank takes its local rank's entry of the list SLURM gives
# the step) or "srun" (srun --gpus-per-task=1 hands each task its own GPU). Never both.
GPU_BINDINGS = ("engine", "srun")
RUNTIMES = ("apptainer", "singularity")
# Extra #SBATCH options a site may set, with the allow-list each value must match.
EXTRA_SBATCH = {
    "qos": v.NAME_RE,
    "reservation": v.NAME_RE,
    "constraint": v.CONSTRAINT_RE,
    "mem": v.GRES_RE,
    "mem-per-cpu": v.GRES_RE,
    "mem-per-gpu": v.GRES_RE,
    "hint": v.NAME_RE,
    "distribution": v.GRES_RE,
    "gpu-bind": v.GRES_RE,
}


@dataclass(frozen=True)
class SiteProfile:
    """One cluster's scheduler facts. Field names are the TOML keys.

    ``python`` is the interpreter the batch shell uses on compute nodes ("" = the interpreter
    running ``cluster-sim submit``, right for the local test cluster). ``command`` is how the
    compute nodes run cluster-sim without a container ([] = ``python -m cluster_sim.cli``).
    """

    name: str
    description: str = ""
    launcher: str = "srun"
    mpi: str = "pmix"
    gpu_request: str = "gpus-per-node"
    gpu_binding: str = "engine"
    cpu_partition: str = ""
    gpu_partition: str = ""
    account: str = ""
    cores_per_node: int = 1
    gpus_per_node: int = 0
    modules: tuple[str, ...] = ()
    container_runtime: str = "apptainer"
    container_binds: tuple[str, ...] = ()
    scratch: str = ""
    python: str = ""
    command: tuple[str, ...] = ()
    exclusive: bool = False
    max_requeues: int = 3
    signal_seconds: int = 300
    env: tuple[tuple[str, str], ...] = ()
    sbatch: tuple[tuple[str, str], ...] = ()
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = f"site {self.name!r}"
        v.name(f"{where}: name", self.name)
        _choice(f"{where}: launcher", self.launcher, LAUNCHERS)
        _choice(f"{where}: gpu_request", self.gpu_request, GPU_REQUESTS)
        _choice(f"{where}: gpu_binding", self.gpu_binding, GPU_BINDINGS)
        _choice(f"{where}: container_runtime", self.container_runtime, RUNTIMES)
        v.name(f"{where}: mpi", self.mpi)
        for key in ("cpu_partition", "gpu_partition", "account"):
            val = getattr(self, key)
            if val:
                v.name(f"{where}: {key}", val)
        v.positive_int(f"{where}: cores_per_node", self.cores_per_node)
        v.positive_int(f"{where}: gpus_per_node", self.gpus_per_node, minimum=0, maximum=64)
        v.positive_int(f"{where}: max_requeues", self.max_requeues, minimum=0, maximum=100)
        v.positive_int(f"{where}: signal_seconds", self.signal_seconds, minimum=1, maximum=65535)
        for m in self.modules:
            v.module(f"{where}: modules", m)
        for b in self.container_binds:
            _bind(f"{where}: container_binds", b)
        if self.scratch:
            _bind(f"{where}: scratch", self.scratch)
        if self.python and not (v.PATH_RE.match(self.python) or v.NAME_RE.match(self.python)):
            raise ConfigError(f"{where}: python", self.python, "must be an absolute path or a command name",
                              "e.g. 'python3' or '/opt/conda/bin/python'")
        for c in self.command:
            if not (v.PATH_RE.match(c) or v.MODULE_RE.match(c)):
                raise ConfigError(f"{where}: command", c, "each word must be a path or a plain word",
                                  "e.g. ['cluster-sim'] or ['/opt/venv/bin/cluster-sim']")
        for k, _ in self.env:
            v.regex(f"{where}: env", k, v.ENV_NAME_RE, "environment variable name")
        for k, val in self.sbatch:
            if k not in EXTRA_SBATCH:
                raise ConfigError(f"{where}: sbatch.{k}", val, "is not an allowed extra #SBATCH option",
                                  f"use one of {sorted(EXTRA_SBATCH)}; partitions/accounts have their own keys")
            v.regex(f"{where}: sbatch.{k}", val, EXTRA_SBATCH[k], f"--{k} value")

    def partition(self, gpus_per_node: int) -> str:
        return (self.gpu_partition or self.cpu_partition) if gpus_per_node else self.cpu_partition

    def python_exe(self) -> str:
        return self.python or sys.executable

    def cluster_sim_command(self) -> list[str]:
        return list(self.command) or [self.python_exe(), "-m", "cluster_sim.cli"]


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, f"must be one of {list(allowed)}", f"set it to one of {', '.join(allowed)}")


def _bind(key: str, value: str) -> None:
    src = value.split(":", 1)[0]
    if not v.PATH_RE.match(src) or not all(v.PATH_RE.match(p) or p in ("ro", "rw") for p in value.split(":")[1:]):
        raise ConfigError(key, value, "is not an absolute path bind (src[:dst[:ro]])", "e.g. '/scratch' or '/data:/data:ro'")


FIELDS = tuple(f.name for f in dataclasses.fields(SiteProfile) if f.name != "source")


def from_mapping(data: dict[str, Any], source: str = "") -> SiteProfile:
    """Build a profile from parsed TOML; unknown keys are an error listing the valid ones."""
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        defaults = {f.name: f.default for f in dataclasses.fields(SiteProfile)
                    if f.name not in ("source", "name")}
        raise ConfigError(f"site file {source}", unknown[0], "unknown key",
                          "valid keys (default): name, " + ", ".join(f"{k} ({defaults[k]!r})" for k in FIELDS[1:]))
    kw: dict[str, Any] = dict(data)
    for key in ("modules", "container_binds", "command"):
        if key in kw:
            if not isinstance(kw[key], list) or not all(isinstance(x, str) for x in kw[key]):
                raise ConfigError(f"site file {source}: {key}", kw[key], "must be a list of strings",
                                  f'write {key} = ["...", "..."]')
            kw[key] = tuple(kw[key])
    for key in ("env", "sbatch"):
        if key in kw:
            if not isinstance(kw[key], dict) or not all(isinstance(x, str) for x in kw[key].values()):
                raise ConfigError(f"site file {source}: {key}", kw[key], "must be a table of strings",
                                  f'write [{key}] with name = "value" lines')
            kw[key] = tuple(sorted(kw[key].items()))
    for key in ("name", "description", "launcher", "mpi", "gpu_request", "gpu_binding", "cpu_partition", "gpu_partition",
                "account", "container_runtime", "scratch", "python"):
        if key in kw and not isinstance(kw[key], str):
            raise ConfigError(f"site file {source}: {key}", kw[key], "must be a string", f'write {key} = "..."')
    if "scratch" in kw:
        kw["scratch"] = kw["scratch"].replace("{user}", _user())
    if "name" not in kw:
        raise ConfigError(f"site file {source}", None, "has no 'name'", "add name = \"<site>\"")
    return SiteProfile(**kw, source=source)


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "user"


def search_dirs() -> list[Path]:
    dirs = [Path.home() / ".config" / "cluster-sim" / "sites"]
    for d in os.environ.get("CLUSTER_SIM_SITES", "").split(os.pathsep):
        if d:
            dirs.append(Path(d))
    return dirs


def _candidates() -> dict[str, tuple[str, str]]:
    """site name -> (toml text, source) with user directories overriding the shipped ones."""
    found: dict[str, tuple[str, str]] = {}
    pkg = resources.files("cluster_sim.deploy") / "sites"
    for entry in sorted(pkg.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            found[entry.name[:-5]] = (entry.read_text(encoding="utf-8"), f"package:{entry.name}")
    for d in search_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found[p.stem] = (p.read_text(encoding="utf-8"), str(p))
    return found


def available() -> list[str]:
    return sorted(_candidates())


def load_site(name: str) -> SiteProfile:
    """Load the profile called ``name`` (file ``<name>.toml``)."""
    cands = _candidates()
    if name not in cands:
        raise ConfigError("--site", name, "no such site profile",
                          f"use one of {sorted(cands)} or add <name>.toml to ~/.config/cluster-sim/sites/ "
                          "or a directory in $CLUSTER_SIM_SITES")
    text, source = cands[name]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"site file {source}", name, f"is not valid TOML: {e}", "fix the syntax") from e
    prof = from_mapping(data, source)
    if prof.name != name:
        raise ConfigError(f"site file {source}: name", prof.name, f"does not match the file name {name!r}",
                          "make name equal the file stem")
    return prof
