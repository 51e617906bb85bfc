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
)


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

    with filtered_stderr(verbose):
        importlib.import_module("tensorflow")
