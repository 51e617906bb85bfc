"""The launch line run through bash: SLURM's GPU list reaches every rank untouched (the engine
picks its local rank's entry), GPU jobs demand --device gpu, and the container runtime (fake srun that starts one process per local rank, fake apptainer)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cluster_sim.deploy import render as R
from cluster_sim.deploy.folder import SubmitOptions
from cluster_sim.deploy.runs import submit_run
from cluster_sim.deploy.sites import from_mapping

from deploy_helpers import PAYLOAD

FAKE_SRUN = r"""#!/bin/bash
n=1
while [[ "${1:-}" == --* ]]; do
  case "$1" in --ntasks-per-node=*) n=${1#*=} ;; esac
  shift
done
pids=()
for ((i = 0; i < n; i++)); do SLURM_LOCALID=$i SLURM_PROCID=$i "$@" & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""
FAKE_APPTAINER = r"""#!/bin/bash
[ "$1" = exec ] || { echo "fake apptainer: only exec" >&2; exit 99; }
shift
flags=()
while [[ "$1" == --* ]]; do
  if [ "$1" = --bind ]; then flags+=("$1" "$2"); shift 2; else flags+=("$1"); shift; fi
done
export FAKE_IN_CONTAINER="$1 ${flags[*]}"
shift
if [ "$1" = cluster-sim ]; then shift; exec "$FAKE_PY" "$FAKE_PAYLOAD" "$@"; fi
exec "$@"
"""


def _bin(tmp: Path) -> Path:
    b = tmp / "bin"
    b.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("apptainer", FAKE_APPTAINER),
                       ("scontrol", "#!/bin/bash\nexit 0\n"), ("sha256sum", "#!/bin/bash\necho fakehash\n")):
        (b / name).write_text(text)
        (b / name).chmod(0o755)
    return b


def _runner(cmd):
    return subprocess.CompletedProcess(cmd, 0, "77\n", "")


def test_gpu_pinning_and_container(tmp_path, spec):
    site = from_mapping({"name": "gpusite", "gpu_partition": "gpu", "cores_per_node": 8, "gpus_per_node": 4,
                         "container_binds": ["/tmp"], "python": sys.executable})
    img = tmp_path / "img.sif"
    img.write_text("not really an image")
    opts = SubmitOptions(site=site, resources=R.JobResources(ranks_per_node=4, gpus_per_node=4),
                         runs_dir=tmp_path / "runs", container=img, validate=False)
    sub = submit_run(spec, opts, runner=_runner)
    text = (sub.run_dir / "job.sbatch").read_text()
    assert "apptainer exec --nv --bind /tmp " + str(img) in text and "CMD=( cluster-sim )" in text
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{_bin(tmp_path)}:{env['PATH']}", FAKE_PY=sys.executable, FAKE_PAYLOAD=str(PAYLOAD),
               SLURM_CPUS_PER_TASK="2", CUDA_VISIBLE_DEVICES="3,5,6,7")  # SLURM's list: GPUs 3,5,6,7
    cp = subprocess.run(["bash", str(sub.run_dir / "job.sbatch")], capture_output=True, text=True, env=env,
                        cwd=tmp_path, timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    out = sub.run_dir / "out"
    seen = {}
    for i in range(4):
        e = json.loads((out / f"env-{i}.json").read_text())
        assert e["CUDA_VISIBLE_DEVICES"] == "3,5,6,7"  # the script never overwrites SLURM's list
        assert e["device"] == "gpu"
        seen[i] = e["picked_gpu"]
        assert e["FAKE_IN_CONTAINER"] == f"{img} --nv --bind /tmp"
        assert e["OMP_NUM_THREADS"] == "2"
    assert seen == {0: "3", 1: "5", 2: "6", 3: "7"}  # one distinct allocated GPU per rank
    prov = (sub.run_dir / "provenance" / "restart-0" / "container.txt").read_text()
    assert f"image={img}" in prov


def test_cpu_job_leaves_cuda_alone(tmp_path, spec):
    site = from_mapping({"name": "cpusite", "cpu_partition": "cpu", "cores_per_node": 4, "python": sys.executable})
    opts = SubmitOptions(site=site, resources=R.JobResources(ranks_per_node=2), runs_dir=tmp_path / "runs",
                         payload=(sys.executable, str(PAYLOAD)), validate=False)
    sub = submit_run(spec, opts, runner=_runner)
    assert "CUDA_VISIBLE_DEVICES=$((" not in (sub.run_dir / "job.sbatch").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = f"{_bin(tmp_path)}:{env['PATH']}"
    cp = subprocess.run(["bash", str(sub.run_dir / "job.sbatch")], capture_output=True, text=True, env=env,
                        cwd=tmp_path, timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    for i in range(2):
        e = json.loads((sub.run_dir / "out" / f"env-{i}.json").read_text())
        assert e["CUDA_VISIBLE_DEVICES"] is None and e["device"] == "auto"


# ---- signal timing, run through bash with fake scheduler commands --------------------------------
FAKE_SCONTROL_SLOW = r"""#!/bin/bash
echo "scontrol $*" >> "$FAKE_LOG"
case "$1" in
  show) sleep 3; echo vm ;;                 # provenance: slow, so USR1 lands before the launch
  requeue) kill -TERM "$PPID" ;;            # what SLURM does to the batch shell on requeue
esac
"""
FAKE_SRUN_SLOW = r"""#!/bin/bash
if [ "$1" = --version ]; then echo "slurm 22.05.8"; exit 0; fi
while [[ "${1:-}" == --* ]]; do shift; done
touch "$FAKE_LOG.srun"
sleep 3                                     # the run is 'still starting' (no handler yet)
exec "$@"
"""


def _signal_env(tmp_path: Path, srun: str, scontrol: str) -> dict[str, str]:
    b = tmp_path / "sigbin"
    b.mkdir()
    for name, text in (("srun", srun), ("scontrol", scontrol)):
        (b / name).write_text(text)
        (b / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{b}:{env['PATH']}", SLURM_JOB_ID="555", SLURM_JOB_NODELIST="vm",
               FAKE_LOG=str(tmp_path / "calls.log"))
    return env


def _submit_local(tmp_path, spec):
    site = from_mapping({"name": "l", "cpu_partition": "debug", "python": sys.executable})
    opts = SubmitOptions(site=site, resources=R.JobResources(), runs_dir=tmp_path / "runs",
                         sets=(("fake.steps", "50"), ("fake.step_s", "0.1")),
                         payload=(sys.executable, str(PAYLOAD)), validate=False)
    return submit_run(spec, opts, runner=_runner)


def test_usr1_before_launch_requeues_without_running(tmp_path, spec):
    sub = _submit_local(tmp_path, spec)
    env = _signal_env(tmp_path, FAKE_SRUN, FAKE_SCONTROL_SLOW)
    p = subprocess.Popen(["bash", str(sub.run_dir / "job.sbatch")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, cwd=tmp_path)
    import time

    time.sleep(1.0)
    p.send_signal(10)  # SIGUSR1 to the batch shell, as --signal=B:USR1 does
    out, _ = p.communicate(timeout=60)
    assert "batch shell got SIGUSR1" in out and "USR1 arrived before the run started" in out, out
    assert "scontrol requeue 555" in (tmp_path / "calls.log").read_text()
    assert not (sub.run_dir / "out" / "argv.json").exists()


def test_usr1_while_run_is_starting_requeues(tmp_path, spec):
    sub = _submit_local(tmp_path, spec)
    env = _signal_env(tmp_path, FAKE_SRUN_SLOW, FAKE_SCONTROL_SLOW.replace("sleep 3; ", ""))
    p = subprocess.Popen(["bash", str(sub.run_dir / "job.sbatch")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, cwd=tmp_path)
    import time

    deadline = time.monotonic() + 30
    while not Path(env["FAKE_LOG"] + ".srun").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    p.send_signal(10)
    out, _ = p.communicate(timeout=60)
    assert "batch shell got SIGUSR1" in out and "died of the forwarded USR1" in out, out
    assert "scontrol requeue 555" in (tmp_path / "calls.log").read_text()


def test_term_before_launch_exits(tmp_path, spec):
    sub = _submit_local(tmp_path, spec)
    env = _signal_env(tmp_path, FAKE_SRUN, FAKE_SCONTROL_SLOW)
    p = subprocess.Popen(["bash", str(sub.run_dir / "job.sbatch")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, cwd=tmp_path)
    import time

    time.sleep(1.0)
    p.send_signal(15)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 143, out
    assert "requeue" not in (tmp_path / "calls.log").read_text()


FAKE_MPIEXEC_EXIT_1 = r"""#!/bin/bash
if [ "$1" = --version ]; then echo "slurm 22.05.8"; exit 0; fi
while [[ "${1:-}" == --* ]]; do shift; done
touch "$FAKE_LOG.srun"
"$@" &
child=$!
trap 'kill -TERM $child' TERM
wait $child; wait $child
exit 1                                      # Open MPI's status after ranks exited 75
"""


def test_sigterm_with_launcher_exit_1_counts_the_committed_checkpoint(tmp_path, spec):
    """Open MPI's mpiexec exits 1 although every rank checkpointed and exited 75: the batch
    script recognises the checkpoint this launch committed and reports 75, not a failure."""
    import time

    sub = _submit_local(tmp_path, spec)
    env = _signal_env(tmp_path, FAKE_MPIEXEC_EXIT_1, "#!/bin/bash\necho \"scontrol $*\" >> \"$FAKE_LOG\"\n")
    p = subprocess.Popen(["bash", str(sub.run_dir / "job.sbatch")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while not Path(env["FAKE_LOG"] + ".srun").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)
    p.send_signal(15)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 75, out
    assert "treating it as checkpointed (75)" in out and "checkpoint at step" in out, out
