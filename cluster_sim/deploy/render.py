"""Render batch scripts from the Jinja2 templates shipped in ``cluster_sim/deploy/templates``.

One frozen dataclass, :class:`JobResources`, holds every SLURM option; :func:`render` is a pure
function of it, the site profile and the run's paths. Nothing here runs a command.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import jinja2

from cluster_sim.deploy import _validate as v
from cluster_sim.deploy.sites import SiteProfile
from cluster_sim.errors import ConfigError

TEMPLATES = ("run.sbatch.j2", "array.sbatch.j2", "member.sbatch.j2", "collect.sbatch.j2")
MODES = ("bsp", "async")
PASS_THROUGH = ("mem", "qos", "constraint", "mail_type", "mail_user")
_ARRAY_RE = re.compile(r"^\d+(?:-\d+)?(?:%\d+)?$")


@dataclass(frozen=True)
class JobResources:
    """What one batch job asks the scheduler for. Units are in the names.

    ``gpus_per_node=0`` means a CPU job; otherwise ranks_per_node must equal gpus_per_node
    (one rank per GPU). ``cpus_per_task=0`` means cores_per_node // ranks_per_node.
    """

    nodes: int = 1
    ranks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 0
    time: str = "01:00:00"
    partition: str = ""
    account: str = ""
    exclusive: bool | None = None
    requeue: bool = True
    signal_seconds: int | None = None
    max_requeues: int | None = None
    dependency: str = ""
    array: str = ""
    # Per-submit pass-through (override the site profile's sbatch table); allow-listed, never shell text.
    mem: str = ""
    qos: str = ""
    constraint: str = ""
    mail_type: str = ""
    mail_user: str = ""

    def __post_init__(self) -> None:
        v.positive_int("--nodes", self.nodes, maximum=100_000)
        v.positive_int("--ranks-per-node", self.ranks_per_node, maximum=1024)
        v.positive_int("--gpus-per-node", self.gpus_per_node, minimum=0, maximum=64)
        v.positive_int("--cpus-per-task", self.cpus_per_task, minimum=0, maximum=4096)
        v.time_limit("--time", self.time)
        if self.partition:
            v.name("--partition", self.partition)
        if self.account:
            v.name("--account", self.account)
        if self.signal_seconds is not None:
            v.positive_int("--signal-seconds", self.signal_seconds, maximum=65535)
        if self.max_requeues is not None:
            v.positive_int("--max-requeues", self.max_requeues, minimum=0, maximum=100)
        if self.dependency:
            v.regex("--dependency", self.dependency, v.DEPENDENCY_RE, "SLURM dependency (e.g. afterok:123)")
        if self.array:
            v.regex("array", self.array, _ARRAY_RE, "array range (e.g. 0-9%4)")
        if self.mem:
            v.regex("--mem", self.mem, v.MEM_RE, "memory per node (e.g. 64G, 4000M; 0 = all)")
        if self.qos:
            v.name("--qos", self.qos)
        if self.constraint:
            v.regex("--constraint", self.constraint, v.CONSTRAINT_RE, "node feature expression (e.g. a100&ib)")
        if self.mail_type:
            bad = [t for t in self.mail_type.split(",") if t not in v.MAIL_TYPES]
            if bad:
                raise ConfigError("--mail-type", self.mail_type, f"{bad[0]!r} is not a SLURM mail type",
                                  f"use a comma list of {', '.join(v.MAIL_TYPES)}")
        if self.mail_user:
            v.regex("--mail-user", self.mail_user, v.MAIL_USER_RE, "user name or e-mail address")
        if self.gpus_per_node and self.ranks_per_node != self.gpus_per_node:
            raise ConfigError("--ranks-per-node", self.ranks_per_node,
                              f"must equal --gpus-per-node ({self.gpus_per_node}): one rank per GPU",
                              f"use --ranks-per-node {self.gpus_per_node}")

    @property
    def ranks(self) -> int:
        return self.nodes * self.ranks_per_node


@dataclass(frozen=True)
class RunCommand:
    """The ``cluster-sim run`` part: spec path plus pass-through options."""

    spec: Path
    sets: tuple[tuple[str, str], ...] = ()
    duration_ms: float | None = None
    checkpoint_every_ms: float | None = None
    mode: str = ""

    def __post_init__(self) -> None:
        for k, val in self.sets:
            v.set_key("--set", k)
            v.set_value(f"--set {k}", val)
        for key, ms in (("--duration", self.duration_ms), ("--checkpoint-every", self.checkpoint_every_ms)):
            if ms is not None and (isinstance(ms, bool) or not isinstance(ms, (int, float)) or not ms > 0):
                raise ConfigError(key, ms, "must be a positive number of milliseconds",
                                  f"e.g. {key} 500")
        if self.mode and self.mode not in MODES:
            raise ConfigError("--mode", self.mode, f"must be one of {list(MODES)}",
                              f"use --mode {MODES[0]} or --mode {MODES[1]}, or leave it out for the spec's mode")

    def args(self) -> list[str]:
        out: list[str] = []
        for k, val in self.sets:
            out += ["--set", f"{k}={val}"]
        if self.duration_ms is not None:
            out += ["--duration", _num(self.duration_ms)]
        if self.checkpoint_every_ms is not None:
            out += ["--checkpoint-every", _num(self.checkpoint_every_ms)]
        if self.mode:
            out += ["--mode", self.mode]
        return out


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass(frozen=True)
class Container:
    image: Path
    runtime: str = "apptainer"
    binds: tuple[str, ...] = ()
    gpu: bool = False

    def prefix(self) -> list[str]:
        words = [self.runtime, "exec"]
        if self.gpu:
            words.append("--nv")
        for b in self.binds:
            words += ["--bind", b]
        words.append(str(self.image))
        return words


@dataclass(frozen=True)
class Rendered:
    text: str
    template: str
    directives: tuple[str, ...] = field(default=())


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    root = resources.files("cluster_sim.deploy") / "templates"

    def load(name: str) -> str:
        return (root / name).read_text(encoding="utf-8")

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # bash uses ${#array[@]}: keep Jinja comments out of its way.
        comment_start_string="{##",
        comment_end_string="##}",
    )
    env.filters["q"] = lambda s: shlex.quote(str(s))
    return env


def directives(site: SiteProfile, res: JobResources, *, job_name: str, run_dir: Path, log_name: str,
               comment: str) -> list[str]:
    """The ``#SBATCH`` lines, sorted by option. Values are allow-listed (sbatch does not unquote)."""
    v.name("job name", job_name)
    v.name("comment", comment)
    log = v.path("log path", run_dir / "logs" / "x")
    opts: dict[str, str | None] = {
        "job-name": job_name,
        "chdir": str(v.path("run folder", run_dir)),
        "output": str(log.parent / log_name),
        "open-mode": "append",
        "nodes": str(res.nodes),
        "ntasks-per-node": str(res.ranks_per_node),
        "cpus-per-task": str(cpus_per_task(site, res)),
        "time": res.time,
        "comment": comment,
    }
    partition = res.partition or site.partition(res.gpus_per_node)
    if partition:
        opts["partition"] = partition
    account = res.account or site.account
    if account:
        opts["account"] = account
    if res.gpus_per_node:
        if site.gpu_request == "gres":
            opts["gres"] = f"gpu:{res.gpus_per_node}"
        elif site.gpu_request == "gpus-per-node":
            opts["gpus-per-node"] = str(res.gpus_per_node)
    if res.exclusive if res.exclusive is not None else site.exclusive:
        opts["exclusive"] = None
    if res.requeue:
        opts["requeue"] = None
        sig = res.signal_seconds if res.signal_seconds is not None else site.signal_seconds
        if sig >= v.time_seconds(res.time):
            raise ConfigError("--signal-seconds", sig, f"is not shorter than the time limit {res.time}",
                              "lower --signal-seconds or raise --time")
        opts["signal"] = f"B:USR1@{sig}"
    else:
        opts["no-requeue"] = None
    if res.dependency:
        opts["dependency"] = res.dependency
    if res.array:
        opts["array"] = res.array
    for k, val in site.sbatch:
        opts[k] = val
    for k in PASS_THROUGH:  # this submit's values win over the site's
        if getattr(res, k):
            opts[k.replace("_", "-")] = getattr(res, k)
    return [f"--{k}" if val is None else f"--{k}={val}" for k, val in sorted(opts.items())]


def cpus_per_task(site: SiteProfile, res: JobResources) -> int:
    if res.cpus_per_task:
        return res.cpus_per_task
    return max(1, site.cores_per_node // res.ranks_per_node)


def launch_prefix(site: SiteProfile, res: JobResources, container: Container | None) -> list[str]:
    """srun/mpiexec words (with srun's GPU binding where the site asks for it), then the container runtime."""
    words: list[str] = []
    cpt = cpus_per_task(site, res)
    if site.launcher == "srun":
        # --cpus-per-task passed explicitly: Slurm 22.05-23.02 srun does not inherit it from sbatch.
        words = ["srun", f"--mpi={site.mpi}", "--kill-on-bad-exit=1", "--unbuffered",
                 f"--nodes={res.nodes}", f"--ntasks-per-node={res.ranks_per_node}", f"--cpus-per-task={cpt}"]
    elif site.launcher == "mpiexec":
        words = ["mpiexec", "-n", str(res.ranks), "--map-by", f"ppr:{res.ranks_per_node}:node:PE={cpt}",
                 "--bind-to", "none"]
    elif res.ranks > 1:
        raise ConfigError("site launcher", "none", f"cannot start {res.ranks} ranks",
                          "use a site with launcher = 'srun' or 'mpiexec'")
    if res.gpus_per_node and site.gpu_binding == "srun" and site.launcher == "srun":
        # srun gives each task its own GPU; the engine then takes the only entry of its list.
        words.append("--gpus-per-task=1")
    # Otherwise CUDA_VISIBLE_DEVICES is left as SLURM set it: the engine picks its local rank's
    # entry (cluster_sim.runtime.device.gpu_for_local_rank). Overwriting it here with
    # SLURM_LOCALID % G would name absolute GPUs the job may not own on nodes without cgroups.
    if container is not None:
        words += container.prefix()
    return words


def run_args(run: RunCommand | None, res: JobResources) -> list[str]:
    """``cluster-sim run`` options; a job that asks for GPUs demands one (--device gpu), so a rank
    that sees none fails at once instead of silently completing on the CPU."""
    if run is None:
        return []
    args = run.args()
    if res.gpus_per_node and "--device" not in args:
        args += ["--device", "gpu"]
    return args


def render(template: str, site: SiteProfile, res: JobResources, run: RunCommand | None, *,
           job_name: str, run_dir: Path, comment: str, container: Container | None = None,
           command: Sequence[str] | None = None, extra: dict[str, Any] | None = None) -> Rendered:
    """Render ``template`` (one of :data:`TEMPLATES`) to the text of a batch script.

    ``command`` overrides how cluster-sim is invoked (default: the site's command, or
    ``cluster-sim`` inside the container); tests use it to put a shell payload in the engine's place.
    """
    if template not in TEMPLATES:
        raise ConfigError("template", template, f"must be one of {list(TEMPLATES)}",
                          "pass one of the names above (the files in cluster_sim/deploy/templates)")
    log_name = "%x-%A_%a.out" if template == "array.sbatch.j2" else "%x-%j.out"
    lines = directives(site, res, job_name=job_name, run_dir=run_dir, log_name=log_name, comment=comment)
    if command is None:
        command = ["cluster-sim"] if container is not None else site.cluster_sim_command()
    ctx: dict[str, Any] = {
        "template": template,
        "site": site.name,
        "directives": lines,
        "run_dir": str(run_dir),
        "max_requeues": res.max_requeues if res.max_requeues is not None else site.max_requeues,
        "modules": list(site.modules),
        "env": list(site.env),
        "python": site.python_exe(),
        "container": container,
        "command": list(command),
        "spec": str(run.spec) if run else "",
        "run_args": run_args(run, res),
        "launch": launch_prefix(site, res, container),
        "nodes": res.nodes,
        "ranks_per_node": res.ranks_per_node,
    }
    ctx.update(extra or {})
    try:
        text = _environment().get_template(template).render(**ctx)
    except jinja2.UndefinedError as e:
        raise ConfigError("template " + template, str(e), "uses a variable the renderer does not provide",
                          "pass it via extra=") from e
    return Rendered(text=text, template=template, directives=tuple(lines))
