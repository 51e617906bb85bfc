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

import shutil
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cluster_sim.analysis import scaling as S
from cluster_sim.deploy import _validate as v
from cluster_sim.deploy import render as R
from cluster_sim.deploy.spec_check import Variant, check_all
from cluster_sim.deploy.runs import (MANIFEST, SCHEMA, SubmitOptions, Submitted, flat_row, load_spec, new_run_dir,
                                     now_utc, overall, read_run_json, safe_name, sbatch_into, status,
                                     write_atomic, write_csv, write_json)
from cluster_sim.deploy.slurm import Runner, Watcher, _run
from cluster_sim.errors import ConfigError

STUDY_KEYS = ("name", "job", "scaling", "nodes", "ranks_per_node", "gpus_per_node", "modes", "seeds", "seed_key",
              "repetitions", "time", "duration_ms", "checkpoint_every_ms", "serialize", "exclusive", "partition",
              "account", "set", "weak")


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


def _int_list(path: Path, key: str, val: Any) -> tuple[int, ...]:
    if isinstance(val, int) and not isinstance(val, bool):
        val = [val]
    if not isinstance(val, list) or not val:
        raise ConfigError(f"study file {path}: {key}", val, "must be a non-empty list of integers", "e.g. [1, 2, 4]")
    return tuple(v.positive_int(f"study file {path}: {key}", x, minimum=0 if key == "seeds" else 1) for x in val)


def load_study(path: Path) -> Study:
    path = Path(path)
    try:
        d = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError("study file", str(path), f"cannot be read: {e}", "check the path") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("study file", str(path), f"is not valid TOML: {e}", "fix the syntax") from e
    unknown = sorted(set(d) - set(STUDY_KEYS))
    if unknown:
        raise ConfigError(f"study file {path}", unknown[0], "unknown key", f"valid keys: {', '.join(STUDY_KEYS)}")
    if not isinstance(d.get("job"), str):
        raise ConfigError(f"study file {path}: job", d.get("job"), "is missing or not a string",
                          'add job = "path/to/job.toml" (relative to the study file)')
    scaling = d.get("scaling", "strong")
    if scaling not in ("strong", "weak"):
        raise ConfigError(f"study file {path}: scaling", scaling, "must be 'strong' or 'weak'", "")
    modes = d.get("modes", ["bsp"])
    if not isinstance(modes, list) or not modes or any(m not in R.MODES for m in modes):
        raise ConfigError(f"study file {path}: modes", modes, f"must be a non-empty list from {list(R.MODES)}", "")
    seeds = _int_list(path, "seeds", d["seeds"]) if "seeds" in d else ()
    seed_key = d.get("seed_key", "")
    if seeds:
        v.set_key(f"study file {path}: seed_key", seed_key)
    weak: list[tuple[str, int]] = []
    for k, base in d.get("weak", {}).items():
        v.set_key(f"study file {path}: weak", k)
        weak.append((k, v.positive_int(f"study file {path}: weak.{k}", base)))
    if scaling == "weak" and not weak:
        raise ConfigError(f"study file {path}: weak", {}, "weak scaling needs population counts to scale",
                          '[weak]\n"network.populations.E.n" = 800   # per rank')
    fixed = tuple((v.set_key("set", k), v.set_value(f"set.{k}", x)) for k, x in d.get("set", {}).items())
    name = d.get("name") or safe_name(path.stem)
    v.name(f"study file {path}: name", name)
    for key in ("duration_ms", "checkpoint_every_ms"):
        x = d.get(key)
        if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)) or x <= 0):
            raise ConfigError(f"study file {path}: {key}", x, "must be a positive number", "")
    return Study(
        name=name, job=(path.parent / d["job"]).resolve(), scaling=scaling,
        nodes=_int_list(path, "nodes", d.get("nodes", [1])),
        ranks_per_node=_int_list(path, "ranks_per_node", d.get("ranks_per_node", [1])),
        gpus_per_node=v.positive_int(f"study file {path}: gpus_per_node", d.get("gpus_per_node", 0), minimum=0),
        modes=tuple(modes), seeds=seeds, seed_key=seed_key,
        repetitions=v.positive_int(f"study file {path}: repetitions", d.get("repetitions", 1)),
        time=v.time_limit(f"study file {path}: time", d.get("time", "01:00:00")),
        duration_ms=d.get("duration_ms"), checkpoint_every_ms=d.get("checkpoint_every_ms"),
        serialize=bool(d.get("serialize", True)), exclusive=bool(d.get("exclusive", True)),
        partition=d.get("partition", ""), account=d.get("account", ""), fixed=fixed, weak=tuple(weak))


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
    spec = load_spec(st.job)
    members = st.members()
    run_dir, uid = new_run_dir(opts.runs_dir, opts.name or st.name)
    for m in members:  # every member's resources are valid before anything is written or checked
        _member_resources(st, m, opts, "")
    if opts.validate and not opts.payload:
        # each member with its own --set values, mode and rank count
        check_all(spec, [Variant(f"study member {m.name}", tuple(opts.sets) + m.sets, st.duration_ms or opts.duration_ms,
                                 m.mode, m.ranks) for m in members])
    if dry_run:
        return Submitted(run_dir, _dry_run(st, members, opts, run_dir, uid), [], True)
    run_dir.mkdir(parents=True)
    (run_dir / "logs").mkdir()
    shutil.copy2(spec, run_dir / "job.toml")
    shutil.copy2(study_file, run_dir / "study.toml")
    man: dict[str, Any] = {
        "schema": SCHEMA, "kind": "study", "name": st.name, "uuid": uid, "run_dir": str(run_dir),
        "created_utc": now_utc(), "site": opts.site.name, "spec_source": str(spec), "spec": "job.toml",
        "study": "study.toml", "scaling": st.scaling, "payload": list(opts.payload),
        "members": [asdict(m) for m in members], "jobs": [], "units": []}
    write_json(run_dir / MANIFEST, man)
    prev = ""
    queued: list[str] = []
    texts: list[str] = []
    for m in members:  # each member rendered once, with the real id of the one before it
        mdir = run_dir / "members" / m.name
        (mdir / "logs").mkdir(parents=True)
        text = _member_script(st, m, opts, run_dir, uid, _dependency(st, prev), True)
        texts.append(f"# ===== member {m.name} =====\n{text}")
        write_atomic(mdir / "job.sbatch", text)
        jid = sbatch_into(run_dir, mdir / "job.sbatch", queued, runner=runner)
        prev = jid
        man["jobs"].append({"job_id": jid, "role": "member", "member": m.name, "script": f"members/{m.name}/job.sbatch"})
        man["units"].append({"unit": m.name, "dir": f"members/{m.name}", "job": jid})
        write_json(run_dir / MANIFEST, man)
    ctext = _collect_script(st, opts, run_dir, uid, [j["job_id"] for j in man["jobs"]], True)
    write_atomic(run_dir / "collect.sbatch", ctext)
    cid = sbatch_into(run_dir, run_dir / "collect.sbatch", queued, runner=runner)
    man["jobs"].append({"job_id": cid, "role": "collect", "script": "collect.sbatch"})
    man["units"].append({"unit": "collect", "dir": "collect", "job": cid})
    write_json(run_dir / MANIFEST, man)
    write_atomic(run_dir / "job_id", "\n".join(j["job_id"] for j in man["jobs"]) + "\n")
    return Submitted(run_dir, "".join(texts) + f"# ===== collect =====\n{ctext}", [j["job_id"] for j in man["jobs"]],
                     False)


def collect_study(run_dir: Path, man: dict[str, Any], *, watcher: Watcher | None = None) -> Path:
    sts = {s.unit: s for s in status(run_dir, watcher=watcher)}
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
    write_csv(res / "members.csv", rows)
    scaling = man.get("scaling", "strong")
    agg = S.aggregate(rows, scaling)
    ratios = S.mode_ratios(agg)
    meta = S.figure_meta(rows, agg, site=man.get("site", ""), scaling=scaling)
    write_csv(res / "scaling.csv", agg)
    if ratios:
        write_csv(res / "mode_ratio.csv", ratios)
    write_atomic(res / "scaling.md", S.markdown(agg, ratios, scaling=scaling, meta=meta))
    pngs = S.plot(agg, res, scaling, meta=meta) if agg else []
    # The study's state is its members' state: the collect job running this is not a member (counting
    # it made every summary say RUNNING).
    member_sts = [s for s in sts.values() if s.unit != "collect"]
    write_json(res / "summary.json", {"state": overall(member_sts).value, "scaling": man.get("scaling"),
                                      "members": len(rows), "aggregated": agg, "bsp_over_async": ratios, "meta": meta,
                                      "plots": [p.name for p in pngs]})
    return res
