"""Templates and site profiles are found when cluster-sim is installed from a wheel (non-editable)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import sys, pathlib
import cluster_sim.deploy as d
assert "site-packages" in d.__file__ and not d.__file__.startswith(sys.argv[1]), d.__file__
from cluster_sim.deploy.sites import load_site, available
from cluster_sim.deploy import render as R
site = load_site("param-brahma")
text = R.render("array.sbatch.j2", site, R.JobResources(array="0-2"), R.RunCommand(pathlib.Path("/x/job.toml")),
                job_name="w", run_dir=pathlib.Path("/x/run"), comment="c").text
assert "#SBATCH --array=0-2" in text
print("OK", d.__file__, sorted(available()))
"""


@pytest.mark.slow
def test_wheel_ships_templates_and_sites(tmp_path):
    wh = tmp_path / "wheel"
    cp = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                         "-q", "-w", str(wh)], capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr
    wheel = next(wh.glob("*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    # install by unpacking (no pip in the venv, no network): a wheel is a zip laid out for site-packages
    import zipfile

    site = next((venv / "lib").glob("python3*/site-packages"))
    zipfile.ZipFile(wheel).extractall(site)
    cp = subprocess.run([str(py), "-c", PROBE, str(ROOT)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert cp.returncode == 0 and cp.stdout.startswith("OK"), cp.stdout + cp.stderr
    assert "param-brahma" in cp.stdout
