"""beNNch-like scaling studies: members over nodes x ranks x modes x seeds x repetitions.

Study file (TOML)::

    name = "cobahh-strong"
    job = "../jobs/cobahh_small.toml"     # relative to the study file
    scaling = "strong"                    # or "weak"
    nodes = [1, 2, 4]
    ranks_per_node = [1]                  # = GPUs per node when gpus_per_node > 0
    gpus_per_node = 0
    modes = ["bsp", "async"]
    seeds = [1, 2]                        # each passed as --set <seed_key>=<seed>
    seed_key = "simulation.seed"
    repetitions = 1
    time = "00:30:00"
    duration_ms = 1000
    serialize = true                      # members run one after another (afterany chain)
    exclusive = true

    [set]                                 # fixed overrides for every member
    [weak]                                # weak scaling: count per rank, multiplied by ranks
    "network.populations.E.n" = 800

``cluster-sim scale FILE`` submits every member plus a final collect job that depends
(``afterany``) on all of them; ``cluster-sim scale --collect RUN`` or ``cluster-sim collect RUN``
writes ``results/members.csv`` (one row per run, per-phase timers), ``results/scaling.csv``
(mean and std over seeds/repetitions, speedup, efficiency, real-time factor, per-population
rates), ``results/mode_ratio.csv`` (BSP/async), ``results/scaling.md`` and PNG plots; the
statistics and plots are :mod:`cluster_sim.analysis.scaling`'s.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cluster_sim.deploy import _validate as v
from cluster_sim.deploy import render as R
from cluster_sim.deploy.folder import (RunFolder, SubmitOptions, Submitted, check_spec_file, overall, safe_name,
                                       write_atomic, write_json)
from cluster_sim.deploy.results import csv_text, flat_row, read_run_json
from cluster_sim.deploy.slurm import Runner, Watcher, _run
from cluster_sim.deploy.spec_check import Variant, check_all
from cluster_sim.deploy.tables import TomlTable
from cluster_sim.deploy.timelimit import short_time_warnings
from cluster_sim.errors import ConfigError


@dataclass(frozen=True)
class Member:
    name: str
    nodes: int
    ranks_per_node: int
    mode: str
    seed: int | None
    repetition: int
    sets: tuple[tuple[str, str], ...]

    @property
    def ranks(self) -> int:
        return self.nodes * self.ranks_per_node


@dataclass(frozen=True)
class Study:
    name: str
    job: Path
    scaling: str
    nodes: tuple[int, ...]
    ranks_per_node: tuple[int, ...]
    gpus_per_node: int
    modes: tuple[str, ...]
    seeds: tuple[int, ...]
    seed_key: str
    repetitions: int
    time: str
    duration_ms: float | None
    checkpoint_every_ms: float | None
    serialize: bool
    exclusive: bool
    partition: str
    account: str
    fixed: tuple[tuple[str, str], ...]
    weak: tuple[tuple[str, int], ...]

    def members(self) -> list[Member]:
        out = []
        seeds: tuple[int | None, ...] = self.seeds or (None,)
        for n in self.nodes:
            for rpn in self.ranks_per_node:
                for mode in self.modes:
                    for seed in seeds:
                        for rep in range(self.repetitions):
                            sets = list(self.fixed)
                            if seed is not None:
                                sets.append((self.seed_key, str(seed)))
                            if self.scaling == "weak":
                                sets += [(k, str(base * n * rpn)) for k, base in self.weak]
                            name = f"n{n}r{rpn}-{mode}" + (f"-s{seed}" if seed is not None else "") + f"-rep{rep}"
                            out.append(Member(name, n, rpn, mode, seed, rep, tuple(sets)))
        return out


def load_study(path: Path) -> Study:
    t = TomlTable.read(Path(path), "study file")
    job = t.path("job")
    scaling = t.string("scaling", "strong", choices=("strong", "weak"))
    modes = t.raw("modes", ["bsp"])
    if not isinstance(modes, list) or not modes or any(m not in R.MODES for m in modes):
        raise ConfigError(t.key("modes"), modes, f"must be a non-empty list from {list(R.MODES)}",
                          'write modes = ["bsp", "async"]')
    seeds = t.int_list("seeds", [], lo=0) if t.has("seeds") else ()
    t.raw("seeds", None)
    seed_key = t.string("seed_key", "")
    if seeds:
        v.set_key(t.key("seed_key"), seed_key)
    wt = t.sub("weak")
    weak = tuple((v.set_key(wt.key(k), k), wt.integer(k)) for k in list(wt.data))
    wt.finish()
    if scaling == "weak" and not weak:
        raise ConfigError(t.key("weak"), {}, "weak scaling needs population counts to scale",
                          '[weak]\n"network.populations.E.n" = 800   # per rank')
    name = t.string("name", "") or safe_name(Path(path).stem)
    v.name(t.key("name"), name)
    st = Study(
        name=name, job=job, scaling=scaling, nodes=t.int_list("nodes", [1]),
        ranks_per_node=t.int_list("ranks_per_node", [1]), gpus_per_node=t.integer("gpus_per_node", 0, lo=0, hi=64),
        modes=tuple(modes), seeds=seeds, seed_key=seed_key, repetitions=t.integer("repetitions", 1),
        time=v.time_limit(t.key("time"), t.raw("time", "01:00:00")),
        duration_ms=t.positive_number("duration_ms"), checkpoint_every_ms=t.positive_number("checkpoint_every_ms"),
        serialize=t.boolean("serialize", True), exclusive=t.boolean("exclusive", True),
        partition=t.string("partition", ""), account=t.string("account", ""), fixed=t.sets("set"), weak=weak)
    t.finish()
    return st


def _member_resources(st: Study, m: Member, opts: SubmitOptions, dependency: str) -> R.JobResources:
    return R.JobResources(nodes=m.nodes, ranks_per_node=m.ranks_per_node,
                          gpus_per_node=m.ranks_per_node if st.gpus_per_node else 0, time=st.time,
                          partition=st.partition, account=st.account, exclusive=st.exclusive,
                          signal_seconds=opts.resources.signal_seconds, max_requeues=opts.resources.max_requeues,
                          dependency=dependency, **{k: getattr(opts.resources, k) for k in R.PASS_THROUGH})


def _member_script(st: Study, m: Member, opts: SubmitOptions, run_dir: Path, uid: str, dependency: str,
                   must_exist: bool) -> str:
    res = _member_resources(st, m, opts, dependency)
    cmd = R.RunCommand(run_dir / "job.toml", tuple(opts.sets) + m.sets, st.duration_ms or opts.duration_ms,
                       st.checkpoint_every_ms or opts.checkpoint_every_ms, m.mode)
    return R.render("member.sbatch.j2", opts.site, res, cmd, job_name=f"{st.name}-{m.name}"[:100],
                    run_dir=run_dir / "members" / m.name, comment=f"cluster-sim-{uid}",
                    container=replace(opts, resources=res).container_obj(must_exist=must_exist),
                    command=opts.command(),
                    extra={"member": m.name, "mode": m.mode, "seed": m.seed, "repetition": m.repetition}).text


def _collect_script(st: Study, opts: SubmitOptions, run_dir: Path, uid: str, ids: list[str], must_exist: bool) -> str:
    # A final job collects the study once every member has ended, whatever its state.
    cres = R.JobResources(nodes=1, ranks_per_node=1, time="00:15:00", partition=st.partition, account=st.account,
                          exclusive=False, requeue=False, dependency="afterany:" + ":".join(ids))
    cont = opts.container_obj(must_exist=must_exist)
    # collect needs no GPU and no MPI: the host's cluster-sim, or the image's without --nv.
    ccmd = ([cont.runtime, "exec", *[w for b in cont.binds for w in ("--bind", b)], str(cont.image), "cluster-sim"]
            if cont is not None else opts.site.cluster_sim_command())
    return R.render("collect.sbatch.j2", opts.site, cres, None, job_name=f"{st.name}-collect"[:100], run_dir=run_dir,
                    comment=f"cluster-sim-{uid}", command=ccmd).text


def _dependency(st: Study, prev: str) -> str:
    return f"afterany:{prev}" if st.serialize and prev else ""


def _dry_run(st: Study, members: list[Member], opts: SubmitOptions, run_dir: Path, uid: str) -> str:
    """The scripts a real submit would write, dependency lines included: job ids do not exist
    yet, so each is shown as <job id of NAME> (rendered from a numeric stand-in, then named)."""
    stand_in = {str(990000000 + i): f"<job id of {m.name}>" for i, m in enumerate(members)}
    ids = list(stand_in)
    parts, prev = [], ""
    for m, jid in zip(members, ids):
        parts.append(f"# ===== member {m.name} =====\n" + _member_script(st, m, opts, run_dir, uid,
                                                                         _dependency(st, prev), False))
        prev = jid
    parts.append("# ===== collect =====\n" + _collect_script(st, opts, run_dir, uid, ids, False))
    text = "".join(parts)
    for num, label in stand_in.items():
        text = text.replace(num, label)
    return text


def submit_study(study_file: Path, opts: SubmitOptions, *, dry_run: bool = False, runner: Runner = _run) -> Submitted:
    st = load_study(study_file)
    spec = check_spec_file(st.job)
    members = st.members()
    folder = StudyFolder.new(opts.runs_dir, opts.name or st.name)
    for m in members:  # every member's resources are valid before anything is written or checked
        _member_resources(st, m, opts, "")
    if opts.validate and not opts.payload:
        # each member with its own --set values, mode and rank count
        check_all(spec, [Variant(f"study member {m.name}", tuple(opts.sets) + m.sets, st.duration_ms or opts.duration_ms,
                                 m.mode, m.ranks) for m in members])
    # one warning for the study: its members share the time limit and checkpoint interval
    warnings = short_time_warnings(spec, _member_resources(st, members[0], opts, ""), opts.site,
                                   st.checkpoint_every_ms or opts.checkpoint_every_ms, opts.runs_dir) if members else []
    if dry_run:
        return Submitted(folder.path, _dry_run(st, members, opts, folder.path, folder.uuid), [], True, warnings)
    folder.create(spec, site=opts.site.name, files={"study.toml": Path(study_file)},
                  dirs=[f"members/{m.name}/logs" for m in members], study="study.toml", scaling=st.scaling,
                  payload=list(opts.payload), members=[asdict(m) for m in members])
    prev = ""
    texts: list[str] = []
    for m in members:  # each member rendered once, with the real id of the one before it
        text = _member_script(st, m, opts, folder.path, folder.uuid, _dependency(st, prev), True)
        texts.append(f"# ===== member {m.name} =====\n{text}")
        script = f"members/{m.name}/job.sbatch"
        folder.write_text(script, text)
        prev = folder.submit(script, role="member", unit=m.name, unit_dir=f"members/{m.name}", runner=runner,
                             member=m.name)
    member_ids = [j["job_id"] for j in folder.manifest["jobs"]]
    ctext = _collect_script(st, opts, folder.path, folder.uuid, member_ids, True)
    folder.write_text("collect.sbatch", ctext)
    folder.submit("collect.sbatch", role="collect", unit="collect", unit_dir="collect", runner=runner)
    return Submitted(folder.path, "".join(texts) + f"# ===== collect =====\n{ctext}",
                     [j["job_id"] for j in folder.manifest["jobs"]], False, warnings)


class StudyFolder(RunFolder):
    """A study's run folder: one job per member under ``members/<name>/`` and a collect job."""

    kind = "study"

    def collect(self, *, watcher: Watcher | None = None) -> Path:
        """Member rows, aggregated scaling tables, the BSP/async table and plots into ``results/``."""
        return _collect_study(self, watcher)


def _collect_study(folder: StudyFolder, watcher: Watcher | None) -> Path:
    from cluster_sim.analysis import scaling as S  # numpy: only when collecting, never for status
    run_dir, man = folder.path, folder.manifest
    sts = {s.unit: s for s in folder.status(watcher=watcher)}
    rows: list[dict[str, Any]] = []
    for m in man["members"]:
        st = sts.get(m["name"])
        mdir = run_dir / "members" / m["name"]
        row: dict[str, Any] = {"member": m["name"], "nodes": m["nodes"], "ranks_per_node": m["ranks_per_node"],
                               "ranks_total": m["nodes"] * m["ranks_per_node"], "mode": m["mode"],
                               "seed": "" if m["seed"] is None else m["seed"], "repetition": m["repetition"],
                               "job_id": st.job_id if st else "", "state": st.state.value if st else "",
                               "provenance": str((mdir / "provenance").relative_to(run_dir))}
        fr = flat_row(read_run_json(mdir / "out"))
        fr.pop("mode", None)
        row.update(fr)
        rows.append(row)
    res = run_dir / "results"
    res.mkdir(parents=True, exist_ok=True)
    write_atomic(res / "members.csv", csv_text(rows))
    scaling = man.get("scaling", "strong")
    agg = S.aggregate(rows, scaling)
    ratios = S.mode_ratios(agg)
    meta = S.figure_meta(rows, agg, site=man.get("site", ""), scaling=scaling)
    write_atomic(res / "scaling.csv", csv_text(agg))
    if ratios:
        write_atomic(res / "mode_ratio.csv", csv_text(ratios))
    write_atomic(res / "scaling.md", S.markdown(agg, ratios, scaling=scaling, meta=meta))
    pngs = S.plot(agg, res, scaling, meta=meta) if agg else []
    # The study's state is its members' state: the collect job running this is not a member (counting
    # it made every summary say RUNNING).
    member_sts = [s for s in sts.values() if s.unit != "collect"]
    write_json(res / "summary.json", {"state": overall(member_sts).value, "scaling": man.get("scaling"),
                                      "members": len(rows), "aggregated": agg, "bsp_over_async": ratios, "meta": meta,
                                      "plots": [p.name for p in pngs]})
    return res
