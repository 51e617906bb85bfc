"""The package ships ``py.typed``: its annotations must hold (mypy, configured in pyproject.toml)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_is_mypy_clean() -> None:
    assert (ROOT / "cluster_sim" / "py.typed").exists()
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], capture_output=True, text=True,
                       cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
