"""Choosing the TensorFlow device and threads before TensorFlow initialises.

Must run before ``import tensorflow``: visibility of GPUs and XLA flags are read at start-up.
"""
from __future__ import annotations

import os
from importlib import metadata

from cluster_sim.errors import ConfigError

# XLA flags cluster-sim sets unless the user set them (in XLA_FLAGS) already.
# XLA:CPU's thunk runtime runs each fused op as a separate task; for the small per-step bodies of
# a neuron kernel the classic whole-program JIT was ~1.2x faster (TF 2.17-2.20; 2.21 ignores it).
_XLA_DEFAULT_FLAGS = {"--xla_cpu_use_thunk_runtime": ("false", (2, 17))}
# XLA:CPU's (MLIR) fusion emitters: exp() ~4x cheaper than the classic emitters' (1.3 vs 5.1 ns
# per float64 element here; BSP COBAHH integrate -25%, async -17%), but they compute the last
# vector of some loops on another path, a few ulp off the rest. No neuron may sit there, or its
# arithmetic would depend on its position (hence on batch composition and rank count): the
# async kernel keeps guard lanes at the end of every batch (asyncmode/bdf.GUARD_LANES); the BSP
# kernel's per-neuron loops show no position dependence (tests/test_bsp_lanes.py).
_XLA_DEFAULT_FLAGS["--xla_cpu_use_fusion_emitters"] = ("true", (2, 21))
# LLVM's vectoriser targets 256-bit vectors by default even where the CPU has AVX-512; 512 bits
# made the float64 COBAHH step 17% cheaper on Sapphire Rapids (35.8 -> 29.8 ns per neuron-step,
# float32 unchanged). CPUs without AVX-512 keep the widest vectors they have.
_XLA_DEFAULT_FLAGS["--xla_cpu_prefer_vector_width"] = ("512", (2, 21))
# XLA:CPU fuses every output array on its own and copies the sub-expressions several outputs
# share (an RK4 stage's rates and currents) into each of their fusions. With its multi-output
# fusion (off by default in TF 2.21) shared work is computed once and sibling outputs are written
# by one loop: RK4 steps 1.4-1.8x cheaper (benchmarks/README.md), exponential Euler unchanged.
MULTI_OUTPUT_FUSION = "xla_cpu_use_multi_output_fusion"
_XLA_DEFAULT_FLAGS["--xla_backend_extra_options"] = (MULTI_OUTPUT_FUSION, (2, 21))


def _tf_version() -> tuple[int, int]:
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            major, minor = metadata.version(dist).split(".")[:2]
            return int(major), int(minor)
        except (metadata.PackageNotFoundError, ValueError):
            continue
    return (0, 0)


def prepare_environment(local_rank: int | None = None) -> None:
    """Environment that must be set before TensorFlow is imported: quiet logs, XLA flags and,
    under MPI/SLURM, one GPU per local rank. Once TensorFlow is imported the XLA flags are left
    alone: XLA read them then."""
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:  # else XLA has read its flags: changing them would only mislead children
        for flag, (value, since) in _XLA_DEFAULT_FLAGS.items():
            if _tf_version() >= since and flag not in os.environ.get("XLA_FLAGS", ""):
                os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}={value}".strip()
    if local_rank is not None:
        choice = gpu_for_local_rank(local_rank, os.environ.get("CUDA_VISIBLE_DEVICES"), _count_node_gpus(),
                                    under_slurm="SLURM_JOB_ID" in os.environ)
        if choice is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = choice


def multi_output_fusion() -> bool:
    """Whether XLA:CPU's multi-output fusion is on in this process's XLA flags (as
    ``prepare_environment`` sets them by default, or as the user set them)."""
    return MULTI_OUTPUT_FUSION in os.environ.get("XLA_FLAGS", "")


def _count_node_gpus() -> int:
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def gpu_for_local_rank(local_rank: int, visible: str | None, node_gpus: int, *,
                       under_slurm: bool = False) -> str | None:
    """The one place that maps a rank to a GPU (the batch script never does).

    Returns the value CUDA_VISIBLE_DEVICES should take, or None to leave it alone (CPU run).
    With a list (SLURM's step list, or one entry per task under ``srun --gpus-per-task=1``) the
    local rank takes its entry, kept as given: ids may be physical ("3,5") on nodes without
    device cgroups, so ``local_rank % G`` as an absolute index could name a GPU of another job.
    Without a list: outside SLURM one node GPU per local rank (plain mpiexec on a workstation);
    under SLURM the job was given no GPU, so "" hides any GPUs the node has. Without this every
    rank would grab GPU 0 (horovod#2625)."""
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip() != ""]
        if not ids or ids == ["-1"]:
            return None
        return ids[local_rank % len(ids)]
    if node_gpus > 0:
        return "" if under_slurm else str(local_rank % node_gpus)
    return None


def select_device(requested: str, cpu_threads: int | None = None) -> str:
    """Configure TensorFlow; returns the device string to place the kernel on.
    ``requested`` is auto|cpu|gpu; 'gpu' with none visible is a ConfigError."""
    import tensorflow as tf

    if cpu_threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cpu_threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, cpu_threads)))
        except RuntimeError:
            pass  # already initialised (e.g. in tests): keep TensorFlow's choice
    from cluster_sim.runtime.tflog import filtered_stderr

    with filtered_stderr():  # the GPU-capable wheel logs a failed cuInit on CPU-only nodes
        gpus = tf.config.list_physical_devices("GPU")
    if requested == "gpu" and not gpus:
        raise ConfigError("engine.device", "gpu", "no GPU is visible to TensorFlow",
                          "use --device cpu (or auto), or run on a GPU node with CUDA_VISIBLE_DEVICES set")
    if requested == "cpu" or not gpus:
        return "/CPU:0"
    for gpu in gpus[:1]:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
    return "/GPU:0"
