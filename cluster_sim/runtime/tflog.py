"""TensorFlow's start-up noise: silenced unless ``--verbose`` (process environment, both modes)."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


# Lines TensorFlow 2.x writes to fd 2 while it is imported, before any logging configuration can
# apply (absl logs them before InitializeLog, so TF_CPP_MIN_LOG_LEVEL does not hide them).
_TF_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Unable to register cuDNN factory", "Unable to register cuFFT factory", "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
    "Could not find cuda drivers on your machine",
    # the GPU-capable `tensorflow` wheel on a node without a GPU, when devices are first listed
    "failed call to cuInit",
    # XLA's persistent cache (runtime/xla_cache.py) loading an entry: it first tries the text
    # format, and XLA:CPU compares LLVM's pseudo-features "prefer-no-gather/scatter", which no
    # host reports, so every load of a valid entry logs these; a real CPU mismatch cannot happen
    # (entries live in a per-machine folder) and would still show under other feature names.
    "Error parsing text-format tensorflow.XlaSerializedCacheEntry",
    "Target machine feature +prefer-no-scatter is not  supported on the host machine",
    "Target machine feature +prefer-no-gather is not  supported on the host machine",
)

# Keras modules TensorFlow imports eagerly (for SavedModel optimizer registration, inside a
# try/except ImportError) that cluster-sim never uses; keras pulls in matplotlib. Stubbing it
# out during the import saves ~0.9 s of 3.3 s (``python -X importtime``, TF 2.21); ``tf.keras``
# still imports lazily on first use.
_SKIPPED_AT_IMPORT = ("keras.src.optimizers", "tf_keras.src.optimizers")


_VERBOSE = False


def quiet_tensorflow(verbose: bool) -> None:
    """Ask TensorFlow's C++ logging for errors only (values the user set are kept); with
    ``verbose`` keep every line. Call before TensorFlow is imported (``--verbose`` in the CLI)."""
    global _VERBOSE
    _VERBOSE = verbose
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@contextlib.contextmanager
def filtered_stderr(verbose: bool | None = None) -> Iterator[None]:
    """Inside: TensorFlow's known start-up lines are removed from fd 2 (they come from C++, so
    this works at the file-descriptor level) unless ``verbose``; every other line is passed on."""
    if _VERBOSE if verbose is None else verbose:
        yield
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(pattern in line for pattern in _TF_NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()


def import_tensorflow(verbose: bool | None = None) -> None:
    """Import TensorFlow with its start-up lines (oneDNN notice, CPU feature guard, absl's
    InitializeLog warning) removed unless ``verbose``: under MPI every rank prints them and they
    fill the log tail a failed job shows."""
    if "tensorflow" in sys.modules:
        return
    import importlib

    stubbed = [m for m in _SKIPPED_AT_IMPORT if m not in sys.modules]
    for name in stubbed:
        sys.modules[name] = None  # type: ignore[assignment]  # "import name" raises ImportError
    try:
        with filtered_stderr(verbose):
            importlib.import_module("tensorflow")
    finally:
        for name in stubbed:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
