"""Single runs and the entry points that dispatch on a run folder's kind.

``submit_run`` submits one ``cluster-sim run`` as a batch job; :func:`open_run` opens any run
folder as the :class:`~cluster_sim.deploy.folder.RunFolder` subclass its manifest names (a run,
a sweep or a study), so ``open_run(path).collect()`` does the right thing. Sweeps and studies
never import this module: it sits at the top of ``deploy``'s imports, below the CLI.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from cluster_sim.deploy import render as R
from cluster_sim.deploy.folder import RunFolder, SubmitOptions, Submitted, check_spec_file, read_manifest, safe_name
from cluster_sim.deploy.slurm import Runner, _run
from cluster_sim.deploy.study import StudyFolder
from cluster_sim.deploy.sweep import SweepFolder
from cluster_sim.deploy.timelimit import short_time_warnings
from cluster_sim.errors import ConfigError

KINDS: dict[str, type[RunFolder]] = {"run": RunFolder, "sweep": SweepFolder, "study": StudyFolder}


def open_run(path: Path) -> RunFolder:
    """The run folder at ``path`` as the class its manifest's ``kind`` names."""
    path = Path(path).resolve()
    man = read_manifest(path)
    cls = KINDS.get(str(man.get("kind")))
    if cls is None:
        raise ConfigError("run folder", str(path), f"has manifest kind {man.get('kind')!r}",
                          f"use a folder made by cluster-sim submit/sweep/scale (kinds: {', '.join(KINDS)})")
    return cls(path, man)


def submit_run(spec: Path, opts: SubmitOptions, *, dry_run: bool = False, runner: Runner = _run) -> Submitted:
    """Render, write the run folder and ``sbatch --parsable`` one run (or just render, dry-run)."""
    spec = check_spec_file(spec)
    name = opts.name or safe_name(spec.stem)
    folder = RunFolder.new(opts.runs_dir, name)
    cmd = R.RunCommand(folder.path / "job.toml", opts.sets, opts.duration_ms, opts.checkpoint_every_ms, opts.mode)
    rendered = R.render("run.sbatch.j2", opts.site, opts.resources, cmd, job_name=name, run_dir=folder.path,
                        comment=folder.comment, container=opts.container_obj(must_exist=not dry_run),
                        command=opts.command())
    # a dry run refuses what a real submit would refuse
    if opts.validate and not opts.payload:
        from cluster_sim.deploy.spec_check import Variant, check_all

        check_all(spec, [Variant("run", opts.sets, opts.duration_ms, opts.mode, opts.resources.ranks)])
    warnings = short_time_warnings(spec, opts.resources, opts.site, opts.checkpoint_every_ms, opts.runs_dir)
    if dry_run:
        return Submitted(folder.path, rendered.text, [], True, warnings)
    folder.create(spec, site=opts.site.name, script="job.sbatch", resources=asdict(opts.resources),
                  run_args=R.run_args(cmd, opts.resources), container=str(opts.container) if opts.container else None,
                  payload=list(opts.payload))
    folder.write_text("job.sbatch", rendered.text)
    job_id = folder.submit("job.sbatch", role="run", unit="run", unit_dir=".", runner=runner)
    return Submitted(folder.path, rendered.text, [job_id], False, warnings)
