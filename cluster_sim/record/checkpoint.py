"""Atomic checkpoints that any number of ranks can resume from.

Each rank writes ``checkpoint/step<S>.rank<r>.npz`` (temp file, fsync, rename); after all
ranks are done, rank 0 writes ``checkpoint/manifest.json`` (same way) naming step S and its
files; the previous manifest becomes ``manifest.prev.json`` and its files stay, so a damaged
newest checkpoint falls back to the one before; older steps are deleted. The manifest is the
commit point: a run killed at any moment leaves either the old complete checkpoint or the new one. Arrays are stored with the global ids
they belong to, so a resumed run may split the neurons differently.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

MANIFEST = "manifest.json"
PREVIOUS = "manifest.prev.json"


class DamagedCheckpoint(Exception):
    """A manifest or rank file that cannot be read back whole (truncated, bad CRC, not JSON)."""


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


def atomic_write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n").encode())


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / "checkpoint"


def rank_file(out: Path, step: int, rank: int) -> Path:
    return checkpoint_dir(out) / f"step{step:012d}.rank{rank}.npz"


def write_rank_part(out: Path, step: int, rank: int, arrays: Mapping[str, np.ndarray]) -> None:
    checkpoint_dir(out).mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy stubs read the names as allow_pickle
    atomic_write_bytes(rank_file(out, step, rank), buf.getvalue())


def commit(out: Path, step: int, size: int, meta: Mapping[str, Any]) -> None:
    """Rank 0, after every rank wrote its part: publish the checkpoint, keep the previous one as
    a fallback, drop older ones and any temporary file a failed write left."""
    cdir = checkpoint_dir(out)
    files = [rank_file(out, step, r).name for r in range(size)]
    keep = set(files)
    current = cdir / MANIFEST
    if current.exists():
        try:
            prev = json.loads(current.read_text())
            if prev.get("step") != step:
                keep.update(prev.get("files", []))
                os.replace(current, cdir / PREVIOUS)
        except (OSError, ValueError):
            pass  # a damaged manifest is no fallback
    atomic_write_json(current, {**meta, "step": step, "ranks": size, "files": files})
    for old in cdir.glob("step*.npz"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    remove_temporaries(out)


def remove_temporaries(out: Path) -> None:
    """Temporary files of checkpoint writes that never finished (killed, disk full)."""
    for tmp in checkpoint_dir(out).glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def read_manifest(out: Path, name: str = MANIFEST) -> dict[str, Any] | None:
    """The manifest (None if there is none); DamagedCheckpoint if it is not a readable JSON object."""
    path = checkpoint_dir(out) / name
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DamagedCheckpoint(f"{path.name} is not valid JSON ({e})") from e
    if not isinstance(data, dict) or not {"step", "files", "spec_digest"} <= set(data):
        raise DamagedCheckpoint(f"{path.name} lacks step/files/spec_digest")
    return data


def verify(out: Path, manifest: Mapping[str, Any]) -> None:
    """Every rank file of ``manifest`` is there and reads back whole (zip CRCs); else DamagedCheckpoint."""
    import zipfile

    for name in manifest["files"]:
        path = checkpoint_dir(out) / name
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (OSError, zipfile.BadZipFile) as e:
            raise DamagedCheckpoint(f"{name}: {e}") from e
        if bad is not None:
            raise DamagedCheckpoint(f"{name}: {bad} fails its CRC check")


def load_parts(out: Path, manifest: Mapping[str, Any]) -> list[dict[str, np.ndarray]]:
    parts = []
    for name in manifest["files"]:
        with np.load(checkpoint_dir(out) / name, allow_pickle=False) as z:
            parts.append({k: z[k] for k in z.files})
    return parts
