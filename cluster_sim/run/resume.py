"""What a checkpoint must match to be resumed, checked before anything heavy is imported."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cluster_sim.errors import ConfigError
from cluster_sim.record import checkpoint as ckpt
from cluster_sim.spec.schema import JobSpec


def spec_digest(spec: JobSpec) -> str:
    """What must match between a checkpoint and the run resuming it: the validated network and
    integrator (defaults filled in), not duration, output, device, partition, exchange or the compilation cache — a run
    may resume longer, elsewhere, on another number of ranks."""
    data = dataclasses.asdict(spec)
    data.pop("raw")
    data.pop("output")
    data["simulation"].pop("duration_ms")
    for key in ("device", "partition", "exchange", "xla_cache", "overlap"):
        data["engine"].pop(key)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resume_manifest(spec: JobSpec, out: Path, mode: str) -> dict[str, Any]:
    """The checkpoint manifest in ``out`` if this spec and mode may resume it; else ConfigError.
    A damaged newest checkpoint falls back to the previous complete one, with a notice."""
    try:
        manifest = _intact(out, ckpt.MANIFEST)
    except ckpt.DamagedCheckpoint as e:
        try:
            manifest = _intact(out, ckpt.PREVIOUS)
        except ckpt.DamagedCheckpoint:
            manifest = None
        if manifest is None:
            raise ConfigError("--resume", str(out), f"the checkpoint in {out} is damaged: {e}",
                              "start the run again with --overwrite (no complete earlier checkpoint is left)") from e
        print(f"cluster-sim: the newest checkpoint in {out} is damaged ({e}); resuming from the previous one "
              f"at {float(manifest.get('simulated_ms', 0.0)):g} ms", file=sys.stderr)
    if manifest is None:
        raise ConfigError("--resume", str(out), "there is no checkpoint to resume from",
                          "run without --resume, or point --out at the folder of the interrupted run")
    if manifest.get("mode", "bsp") != mode or manifest["spec_digest"] != spec_digest(spec):
        raise ConfigError("--resume", str(out), "the checkpoint was written by a different network, integrator or mode",
                          "resume with the same job spec, --mode and --set overrides as the interrupted run")
    done = float(manifest.get("simulated_ms", 0.0))
    if spec.simulation.duration_ms < done - 1e-9:
        raise ConfigError("simulation.duration_ms", spec.simulation.duration_ms,
                          f"is shorter than the checkpoint in {out}, which is at {done:g} ms",
                          f"resume with --duration >= {done:g} (the total simulated time), or run without --resume "
                          "into a new --out")
    ckpt.remove_temporaries(out)
    return manifest


def _intact(out: Path, name: str) -> dict[str, Any] | None:
    manifest = ckpt.read_manifest(out, name)
    if manifest is not None:
        ckpt.verify(out, manifest)
    return manifest


def verify_outputs(spec: JobSpec, out: Path, manifest: dict[str, Any]) -> None:
    """Refuse a resume whose output files no longer hold what the checkpoint says they hold
    (truncated, overwritten, damaged): a resume copies their first rows, so it must not copy
    fill values of chunks that are not on disk any more."""
    import h5py
    import numpy as np

    def damaged(path: Path, why: str) -> ConfigError:
        return ConfigError("--resume", str(out), f"{path.name} is damaged: {why}",
                           "start the run again with --overwrite (or restore the file from a backup)")

    def check_rows(f: h5py.File, path: Path, name: str, n: int) -> None:
        ds = f[name]
        if ds.shape[0] < n:
            raise damaged(path, f"{name} has {ds.shape[0]} rows, the checkpoint expects {n}")
        if n == 0:
            return
        size = path.stat().st_size
        chunk_rows = ds.chunks[0]
        have = {}
        for i in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(i)
            have[info.chunk_offset[0] // chunk_rows] = info.byte_offset + info.size
        for c in range((n + chunk_rows - 1) // chunk_rows):
            end = have.get(c)
            if end is None or end > size:
                raise damaged(path, f"rows {c * chunk_rows}..{min(n, (c + 1) * chunk_rows) - 1} of {name} are not on disk "
                                    f"(file is {size} bytes)")

    t_max = float(manifest.get("simulated_ms", 0.0)) + 1e-9
    spikes = out / "spikes.h5"
    counts = manifest.get("spike_counts", {})
    try:
        with h5py.File(spikes, "r", libver="latest", swmr=True) as f:
            for pop, n in counts.items():
                for name in ("timestamps", "node_ids"):
                    check_rows(f, spikes, f"spikes/{pop}/{name}", int(n))
                t = f[f"spikes/{pop}/timestamps"][:n]
                ids = f[f"spikes/{pop}/node_ids"][:n]
                if t.size and (not np.isfinite(t).all() or t.min() < 0 or t.max() > t_max):
                    raise damaged(spikes, f"spike times of {pop} outside [0, {t_max:g}] ms")
                if ids.size and int(ids.max()) >= spec.population(pop).count:
                    raise damaged(spikes, f"node ids of {pop} beyond its {spec.population(pop).count} neurons")
        for rec, n in manifest.get("trace_rows", {}).items():
            path = out / f"report_{rec}.h5"
            with h5py.File(path, "r", libver="latest", swmr=True) as f:
                pop = next(iter(f["report"]))
                check_rows(f, path, f"report/{pop}/data", int(n))
    except (OSError, KeyError) as e:
        raise ConfigError("--resume", str(out), f"the output files cannot be read back: {e}",
                          "start the run again with --overwrite (or restore the files from a backup)") from e
