"""Rendering: golden scripts, directives, resource arithmetic, site profiles, package data."""
from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest

from cluster_sim.deploy import render as R
from cluster_sim.deploy.sites import available, from_mapping, load_site
from cluster_sim.errors import ConfigError

GOLDEN = Path(__file__).parent / "golden"
RUN_DIR = Path("/scratch/alice/runs/cobahh-0000abcd")


def brahma_script() -> str:
    site = load_site("param-brahma")
    res = R.JobResources(nodes=4, ranks_per_node=2, gpus_per_node=2, time="02:00:00")
    cmd = R.RunCommand(RUN_DIR / "job.toml", (("stimuli.odor.amplitude_uA_cm2", "10"),), duration_ms=1000,
                       checkpoint_every_ms=100, mode="bsp")
    img = R.Container(Path("/scratch/alice/cluster-sim-gpu.sif"), site.container_runtime, site.container_binds, True)
    return R.render("run.sbatch.j2", site, res, cmd, job_name="cobahh", run_dir=RUN_DIR,
                    comment="cluster-sim-0000abcd", container=img).text


def generic_array_script() -> str:
    site = load_site("generic")
    res = R.JobResources(nodes=1, ranks_per_node=1, time="00:20:00", array="0-5%2")
    cmd = R.RunCommand(RUN_DIR / "job.toml")
    return R.render("array.sbatch.j2", site, res, cmd, job_name="al-sweep", run_dir=RUN_DIR,
                    comment="cluster-sim-0000abcd").text


@pytest.mark.parametrize("name,make", [("run_param_brahma.sbatch", brahma_script),
                                       ("array_generic.sbatch", generic_array_script)])
def test_golden(name, make):
    text = make()
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"rendered script changed; if intended: UPDATE_GOLDEN=1 pytest {__file__}"


@pytest.mark.parametrize("make", [brahma_script, generic_array_script])
def test_rendered_scripts_are_valid_bash(make, tmp_path):
    p = tmp_path / "s.sbatch"
    p.write_text(make())
    cp = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr


def test_brahma_script_facts():
    text = brahma_script()
    assert "#SBATCH --gres=gpu:2\n" in text and "--gpus-per-node" not in text.split("set -uo")[0]
    assert "#SBATCH --partition=gpu\n" in text
    assert "#SBATCH --signal=B:USR1@300\n" in text and "#SBATCH --requeue\n" in text
    assert "#SBATCH --open-mode=append\n" in text
    assert f"#SBATCH --output={RUN_DIR}/logs/%x-%j.out\n" in text
    # srun gets --cpus-per-task explicitly (Slurm 22.05 does not inherit it), 48 cores / 2 GPUs.
    assert "srun --mpi=pmix --kill-on-bad-exit=1 --unbuffered --nodes=4 --ntasks-per-node=2 --cpus-per-task=24" in text
    # SLURM's CUDA_VISIBLE_DEVICES is never overwritten by the script: the engine picks per rank.
    assert "CUDA_VISIBLE_DEVICES" not in text and "SLURM_LOCALID" not in text
    launch = next(line for line in text.splitlines() if line.startswith("LAUNCH=("))
    assert launch.endswith("singularity exec --nv --bind /scratch /scratch/alice/cluster-sim-gpu.sif )")
    # A GPU job demands the GPU: a rank that sees none fails at once (exit 2), never runs on the CPU.
    args = next(line for line in text.splitlines() if line.startswith("ARGS=("))
    assert args.endswith(" --device gpu )")
    assert "module load openmpi/4.1.5 cuda/12.2 singularity" in text
    assert "CMD=( cluster-sim )" in text


def test_cpu_job_does_not_demand_a_gpu():
    assert "--device" not in generic_array_script()


def test_srun_gpu_binding_where_the_site_says_so():
    site = replace(load_site("generic"), gpu_binding="srun")
    words = R.launch_prefix(site, R.JobResources(nodes=1, ranks_per_node=4, gpus_per_node=4), None)
    assert "--gpus-per-task=1" in words and not any("CUDA_VISIBLE_DEVICES" in w for w in words)
    assert "--gpus-per-task=1" not in R.launch_prefix(load_site("generic"), R.JobResources(ranks_per_node=4,
                                                                                          gpus_per_node=4), None)
    with pytest.raises(ConfigError, match="gpu_binding"):
        replace(site, gpu_binding="cuda")


def test_generic_uses_gpus_per_node():
    site = load_site("generic")
    lines = R.directives(site, R.JobResources(nodes=2, ranks_per_node=4, gpus_per_node=4), job_name="x",
                         run_dir=RUN_DIR, log_name="%x-%j.out", comment="c")
    assert "--gpus-per-node=4" in lines and not any(x.startswith("--gres") for x in lines)
    assert "--cpus-per-task=8" in lines


def test_directives_sorted_and_array_logs():
    text = generic_array_script()
    sb = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert sb == sorted(sb)
    assert "#SBATCH --array=0-5%2" in sb
    assert f"#SBATCH --output={RUN_DIR}/logs/%x-%A_%a.out" in sb


def test_one_rank_per_gpu_enforced():
    with pytest.raises(ConfigError, match="one rank per GPU"):
        R.JobResources(nodes=1, ranks_per_node=4, gpus_per_node=2)


def test_signal_must_be_shorter_than_time():
    with pytest.raises(ConfigError, match="not shorter than the time limit"):
        R.directives(load_site("local"), R.JobResources(time="00:01:00", signal_seconds=90), job_name="x",
                     run_dir=RUN_DIR, log_name="x", comment="c")


def test_no_requeue_drops_signal():
    lines = R.directives(load_site("local"), R.JobResources(requeue=False), job_name="x", run_dir=RUN_DIR,
                         log_name="x", comment="c")
    assert "--no-requeue" in lines and not any(x.startswith("--signal") for x in lines)


@pytest.mark.parametrize("text,seconds", [("30", 1800), ("05:30", 330), ("1:2", 62), ("02:00:00", 7200),
                                          ("1-12", 129600), ("1-12:30", 131400), ("2-00:00:05", 172805)])
def test_every_slurm_time_format(text, seconds):
    from cluster_sim.deploy import _validate as v

    assert R.JobResources(time=text).time == text and v.time_seconds(text) == seconds


@pytest.mark.parametrize("bad", ["abc", "02:00:00; id", "-1", "0", "00:00:00", "1-", "1:2:3:4", "1-2-3"])
def test_bad_time(bad):
    with pytest.raises(ConfigError, match="--time"):
        R.JobResources(time=bad)


def test_launcher_none_refuses_many_ranks():
    site = replace(load_site("local"), launcher="none")
    with pytest.raises(ConfigError, match="cannot start 2 ranks"):
        R.launch_prefix(site, R.JobResources(ranks_per_node=2), None)


def test_mpiexec_launcher():
    site = replace(load_site("generic"), launcher="mpiexec")
    words = R.launch_prefix(site, R.JobResources(nodes=2, ranks_per_node=4, gpus_per_node=4), None)
    assert words[:3] == ["mpiexec", "-n", "8"]


def test_strict_undefined(monkeypatch):
    env = R._environment()
    with pytest.raises(Exception, match="undefined"):
        env.from_string("{{ nope }}").render()


# ---- site profiles --------------------------------------------------------------------------
def test_shipped_sites():
    assert {"local", "generic", "param-brahma"} <= set(available())
    b = load_site("param-brahma")
    assert (b.cpu_partition, b.gpu_partition, b.gpu_request, b.container_runtime) == ("standard", "gpu", "gres", "singularity")
    assert b.scratch.startswith("/scratch/") and "{user}" not in b.scratch
    assert b.partition(0) == "standard" and b.partition(2) == "gpu"


def test_unknown_site_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        from_mapping({"name": "x", "partiton": "gpu"}, "x.toml")
    msg = str(e.value)
    assert "partiton" in msg and "cpu_partition" in msg and "gpu_request" in msg


def test_unknown_site_name():
    with pytest.raises(ConfigError, match="no such site profile"):
        load_site("nowhere")


def test_user_site_dir(tmp_path, monkeypatch):
    d = tmp_path / "sites"
    d.mkdir()
    (d / "mycluster.toml").write_text('name = "mycluster"\ncpu_partition = "batch"\ncores_per_node = 64\n')
    (d / "local.toml").write_text('name = "local"\ncpu_partition = "override"\n')
    monkeypatch.setenv("CLUSTER_SIM_SITES", str(d))
    assert load_site("mycluster").cpu_partition == "batch"
    assert load_site("local").cpu_partition == "override"


def test_site_name_must_match_file(tmp_path, monkeypatch):
    (tmp_path / "a.toml").write_text('name = "b"\n')
    monkeypatch.setenv("CLUSTER_SIM_SITES", str(tmp_path))
    with pytest.raises(ConfigError, match="does not match the file name"):
        load_site("a")


@pytest.mark.parametrize("key,value", [("launcher", "ssh"), ("gpu_request", "gpu"), ("container_runtime", "docker"),
                                       ("cpu_partition", "gpu; rm -rf /"), ("modules", ["gcc/12 $(id)"]),
                                       ("sbatch", {"wckey": "x"}), ("sbatch", {"qos": "a b"})])
def test_bad_site_values(key, value):
    with pytest.raises(ConfigError):
        from_mapping({"name": "x", key: value}, "x.toml")


# ---- package data ---------------------------------------------------------------------------
def test_templates_and_sites_are_package_data():
    root = resources.files("cluster_sim.deploy")
    for t in R.TEMPLATES + ("base.sbatch.j2",):
        assert (root / "templates" / t).is_file()
    for s in ("local", "generic", "param-brahma"):
        assert (root / "sites" / f"{s}.toml").is_file()


def test_slurm_dir_has_no_duplicate_templates():
    slurm = Path(__file__).resolve().parents[2] / "slurm"
    assert not list(slurm.glob("*.j2")), "templates live in cluster_sim/deploy/templates only"
    assert "cluster_sim/deploy/templates" in (slurm / "README.md").read_text()


def test_default_runs_dir(monkeypatch):
    from cluster_sim.deploy.folder import default_runs_dir

    monkeypatch.delenv("CLUSTER_SIM_RUNS", raising=False)
    assert default_runs_dir(load_site("local")) == Path("runs")
    assert str(default_runs_dir(load_site("param-brahma"))).endswith("/cluster-sim/runs")
    monkeypatch.setenv("CLUSTER_SIM_RUNS", "/data/runs")
    assert default_runs_dir(load_site("param-brahma")) == Path("/data/runs")


def test_pass_through_options_override_the_site():
    site = replace(load_site("generic"), sbatch=(("qos", "normal"),))
    res = R.JobResources(mem="64G", qos="high", constraint="a100&ib", mail_type="END,FAIL", mail_user="ann@uni.example.org")
    lines = R.directives(site, res, job_name="x", run_dir=RUN_DIR, log_name="x", comment="c")
    for want in ("--mem=64G", "--qos=high", "--constraint=a100&ib", "--mail-type=END,FAIL",
                 "--mail-user=ann@uni.example.org"):
        assert want in lines, lines
    assert "--qos=normal" not in lines


@pytest.mark.parametrize("key,value,fix", [("mem", "64G; id", "64G"), ("qos", "a b", ""), ("constraint", "$(id)", "a100"),
                                           ("mail_type", "END,SOMETIMES", "BEGIN"), ("mail_user", "a@b;id", "e-mail")])
def test_pass_through_refuses_shell_text(key, value, fix):
    with pytest.raises(ConfigError) as e:
        R.JobResources(**{key: value})
    assert "--" + key.replace("_", "-") in str(e.value) and fix in str(e.value)


def test_cli_pass_through_in_dry_run(tmp_path):
    from deploy_helpers import run_cs

    spec = tmp_path / "j.toml"
    spec.write_text('name = "x"\n')
    cp = run_cs("submit", spec, "--dry-run", "--no-validate", "--runs-dir", tmp_path / "runs", "--mem", "4G",
                "--mail-type", "FAIL", "--mail-user", "ann", "--time", "1-12")
    assert cp.returncode == 0, cp.stderr
    assert "#SBATCH --mem=4G\n" in cp.stdout and "#SBATCH --mail-type=FAIL\n" in cp.stdout
    assert "#SBATCH --time=1-12\n" in cp.stdout
    cp = run_cs("submit", spec, "--dry-run", "--no-validate", "--runs-dir", tmp_path / "runs", "--mem", "4G'; id")
    assert cp.returncode == 2 and "--mem" in cp.stderr
