"""XLA's persistent compilation cache, on by default for both execution modes.

TensorFlow saves every executable it JIT-compiles into ``--tf_xla_persistent_cache_directory``
(one ``<prefix>__<signature>__<HLO fingerprint>__<device>.pb`` file each) and loads it instead of
compiling when the same program comes again. Two properties of TF 2.21's writer decide the layout
here (``tensorflow/compiler/jit/device_executable_persistor.h``, ``device_compiler.h``):

* entries are written in place, not atomically, and a reader that finds a half-written entry
  fails the compilation (and with it the run); an entry that cannot be written fails it as well;
* the key holds neither the TensorFlow version nor the CPU: an XLA:CPU entry is machine code
  for the compiling host's features (its loader warns of SIGILL on another CPU).

So XLA only ever sees a private folder of this process (``staging``, on node-local temp): the
shared cache's entries are linked into it before compiling, and the entries XLA wrote are then
published to the shared cache by copy + rename, which is atomic on POSIX file systems, NFS and
Lustre alike: concurrent ranks and array jobs see a complete entry or none, and the last of two
identical writers simply wins. The shared cache has one sub-folder per TensorFlow version and
machine fingerprint (CPU model and features, GPU models, XLA flags).

Where: ``engine.xla_cache`` in the spec ("auto", "off" or a folder); with "auto" the
``CLUSTER_SIM_XLA_CACHE`` environment variable (a folder, or "off"), else
``$XDG_CACHE_HOME/cluster-sim/xla`` (``~/.cache/cluster-sim/xla``). A user's own
``--tf_xla_persistent_cache_directory`` in ``TF_XLA_FLAGS`` is left alone and only observed.
TensorFlow reads its flags once per process, at the first compilation: the staging folder is
therefore chosen once per process; later runs in the same process publish to their own cache.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import platform
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

ENV_VAR = "CLUSTER_SIM_XLA_CACHE"
OFF_VALUES = ("off", "none", "false", "0", "no")
_FLAG = "--tf_xla_persistent_cache_directory="
_STAGING_VAR = "CLUSTER_SIM_XLA_STAGING"  # marks the flag above as ours (children inherit both)
_ENTRY_SUFFIX = ".pb"

_staging: Path | None = None  # this process's folder XLA reads and writes (set once)


@dataclass
class XlaCache:
    """The cache one run uses: where it lives and what this run found and added there."""

    directory: Path | None  # the shared cache folder (with its fingerprint sub-folder), None = off
    source: str  # "spec", "env", "default", "TF_XLA_FLAGS" or "off"
    staging: Path | None = None  # the folder XLA was pointed at (None: the user's own flag)
    entries_found: int = 0  # entries in the cache before this run compiled
    entries_written: int = 0  # entries compiled (cache misses) by this run and published
    entries_written_in_run: int = 0  # of which after startup: a kernel compiled late (should be 0)
    errors: list[str] = field(default_factory=list)
    _before: set[str] = field(default_factory=set)

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def begin(self) -> None:
        """Before any compilation: make the shared entries visible to XLA, note what is there."""
        if self.directory is None:
            return
        watched = self.staging or self.directory
        try:
            self.entries_found = len(_entries(self.directory))
            if self.staging is not None:
                _link_entries(self.directory, self.staging)
        except OSError as e:
            self.errors.append(f"reading {self.directory}: {e}")
        self._before = _entries(watched)

    def publish(self, *, after_startup: bool = False) -> int:
        """After compiling: copy the entries XLA wrote since ``begin`` into the shared cache,
        each atomically. Returns how many were new. Failures (a read-only or full cache) are
        recorded, never raised: the run itself has its executables already. ``after_startup``:
        this is the end of the run, so new entries were compiled during integration."""
        if self.directory is None:
            return 0
        watched = self.staging or self.directory
        new = sorted(_entries(watched) - self._before)
        if self.staging is not None:
            for name in new:
                try:
                    _atomic_copy(self.staging / name, self.directory / name)
                except OSError as e:
                    self.errors.append(f"writing {self.directory / name}: {e}")
        self._before |= set(new)
        self.entries_written += len(new)
        if after_startup:
            self.entries_written_in_run += len(new)
        return len(new)

    def summary(self) -> dict[str, Any]:
        """For run.json: ``hit`` is true when every kernel came from a cache (nothing compiled
        anew was written), which is the case of a warm cache."""
        return {"enabled": self.enabled, "source": self.source,
                "directory": str(self.directory) if self.directory else None,
                "entries_found": self.entries_found, "entries_written": self.entries_written,
                "entries_written_in_run": self.entries_written_in_run,
                "hit": self.enabled and self.entries_written == 0, "errors": list(self.errors)}


def resolve_root(setting: str = "auto", env: Mapping[str, str] | None = None) -> tuple[Path | None, str]:
    """The cache root folder and where the choice came from; (None, "off") when disabled."""
    env = os.environ if env is None else env
    if setting.strip().lower() in OFF_VALUES:
        return None, "off"
    if setting != "auto":
        return Path(os.path.expandvars(setting)).expanduser(), "spec"
    value = env.get(ENV_VAR)
    if value is not None and value.strip() != "":
        if value.strip().lower() in OFF_VALUES:
            return None, "off"
        return Path(os.path.expandvars(value)).expanduser(), "env"
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "cluster-sim" / "xla", "default"


def machine_fingerprint(env: Mapping[str, str] | None = None) -> str:
    """The sub-folder name: entries are valid only for this TensorFlow, CPU (and GPU) and flags."""
    env = os.environ if env is None else env
    tf_version = "unknown"
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            tf_version = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    flags = " ".join(f for f in env.get("TF_XLA_FLAGS", "").split() if not f.startswith(_FLAG))
    parts = [tf_version, platform.machine(), _cpu_identity(), _gpu_models(), env.get("XLA_FLAGS", ""), flags]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"tf{tf_version}-{platform.machine()}-{digest}"


def configure(setting: str = "auto") -> XlaCache:
    """Point XLA at this process's cache before it first compiles (call before or right after
    ``import tensorflow``); returns the run's cache. Call ``begin`` before compiling."""
    global _staging
    user_dir = _user_flag(os.environ.get("TF_XLA_FLAGS", ""))
    if user_dir is not None and _staging is None and user_dir == os.environ.get(_STAGING_VAR):
        # Inherited from a parent cluster-sim process (its private folder, gone when it exits),
        # not set by the user: drop it and choose this process's own.
        os.environ["TF_XLA_FLAGS"] = " ".join(f for f in os.environ["TF_XLA_FLAGS"].split() if not f.startswith(_FLAG))
        user_dir = None
    if user_dir is not None and (_staging is None or user_dir != str(_staging)):
        return XlaCache(Path(user_dir), "TF_XLA_FLAGS")
    root, source = resolve_root(setting)
    if root is None:
        return XlaCache(None, source)
    directory = root / machine_fingerprint()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return XlaCache(None, "off", errors=[f"creating {directory}: {e} (set {ENV_VAR} to a writable folder)"])
    if _staging is None:
        _staging = Path(tempfile.mkdtemp(prefix=f"cluster-sim-xla-{os.getpid()}-"))
        atexit.register(shutil.rmtree, _staging, True)
        flags = os.environ.get("TF_XLA_FLAGS", "")
        os.environ["TF_XLA_FLAGS"] = f"{flags} {_FLAG}{_staging}".strip()
        os.environ[_STAGING_VAR] = str(_staging)
    return XlaCache(directory, source, staging=_staging)


# -- files --------------------------------------------------------------------------------------

def _entries(folder: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(folder) if e.name.endswith(_ENTRY_SUFFIX) and not e.name.startswith(".")}
    except FileNotFoundError:
        return set()


def _link_entries(shared: Path, staging: Path) -> None:
    """Symbolic links, not copies: entries are megabytes. A published entry is only ever
    replaced whole (rename), so a link always leads to a complete file."""
    present = _entries(staging)
    for name in _entries(shared) - present:
        try:
            os.symlink(shared / name, staging / name)
        except FileExistsError:
            pass


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.parent / f".{dst.name}.{socket.gethostname()}.{os.getpid()}.tmp"
    try:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
            fo.flush()
            os.fsync(fo.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _user_flag(tf_xla_flags: str) -> str | None:
    for f in tf_xla_flags.split():
        if f.startswith(_FLAG):
            return f[len(_FLAG):] or None
    return None


def _cpu_identity() -> str:
    """Model name and feature flags of the first CPU (x86 'flags', Arm 'Features')."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor()
    keep = []
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("model name", "flags", "features", "cpu part", "cpu implementer") and line not in keep:
            keep.append(line)
        elif not line.strip() and keep:
            break  # the first processor's block is enough
    return "\n".join(keep)


def _gpu_models() -> str:
    root = Path("/proc/driver/nvidia/gpus")
    models = []
    try:
        for info in sorted(root.glob("*/information")):
            models += [ln for ln in info.read_text(errors="replace").splitlines() if ln.startswith("Model")]
    except OSError:
        pass
    return ",".join(models)
