"""With XLA's fusion emitters (``runtime/device.py``) the BSP kernel must give a neuron the same
arithmetic at every position of its population's arrays, or results would change with the rank
count. Checked in fresh processes, as runs get them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cluster_sim.runtime import device
from tests.conftest import SMALL_COBAHH

# Neurons of a population hold one of 8 initial states (taken from real neurons), cycling with
# an offset, and receive one of 8 input trains cycling the same way: after 300 steps every
# member of a class must be bitwise equal to every other, wherever it sits (the last vector of
# the arrays included, and without padding: 4000 = 125 x 32).
_CHECK = textwrap.dedent("""
    import json, sys
    import numpy as np
    from cluster_sim.runtime.device import prepare_environment
    prepare_environment()
    import tensorflow as tf
    import tomllib
    from cluster_sim.spec.load import parse_spec
    from cluster_sim.engine.kernel import IntervalKernel, initial_state
    from cluster_sim.network.build import build_network
    spec = parse_spec(tomllib.loads(sys.argv[1]), sys.argv[2:])
    net = build_network(spec)
    k = IntervalKernel(net, precision=spec.integrator.precision, method=spec.integrator.method,
                       dt_ms=spec.integrator.dt_ms)
    s0 = initial_state(net)
    cls = {}
    for key, v in s0.items():
        c = (np.arange(v.size) + 3) % 8
        s0[key] = v[:8][c]
        cls[key] = c
    rng = np.random.default_rng(1)
    m = 10
    trains = {kk: rng.uniform(0, 3, (m, 8)) * (rng.random((m, 8)) < 0.3) for kk in k.layout.event_keys}
    st = k.to_device(s0)
    spikes = 0
    for i in range(30):
        inp = {kk: t[:, (np.arange(net.populations[kk.split('.')[0]].local.size) + 3) % 8] for kk, t in trains.items()}
        res = k.run(st, i * m, m, inp)
        st = res.state
        spikes += sum(int(np.sum(~np.isnan(a))) for a in res.spikes.values())
    bad = []
    for key, v in k.to_host(st).items():
        for j in range(8):
            vals = v[cls[key] == j]
            if vals.size and not np.array_equal(vals, np.full_like(vals, vals[0]), equal_nan=True):
                bad.append([key, j, int(np.sum(vals != vals[0]))])
    print(json.dumps({"bad": bad, "spikes": spikes, "flags": __import__("os").environ.get("XLA_FLAGS", "")}))
""")


def _overrides(n: int, precision: str, method: str) -> list[str]:
    """SMALL_COBAHH with E resized (its synapses do not enter the kernel: sparse to build fast).
    RK4 runs at dt 0.05 ms (its 300 steps still see the classes spike) and reads every stage's
    derivatives back through the kernel's materialising gathers."""
    dt = [] if method == "exp_euler" else [f'integrator.method="{method}"', "integrator.dt_ms=0.05"]
    return [f"populations.E.count={n}", f'integrator.precision="{precision}"', *dt,
            *(f"projections.{k}.connect.p=0.01" for k in ("EE", "EI", "IE", "II"))]


@pytest.mark.parametrize("n,precision,method", [(4000, "float64", "exp_euler"), (4003, "float64", "exp_euler"),
                                                (4000, "float32", "exp_euler"), (77, "float32", "exp_euler"),
                                                (4003, "float64", "rk4")])
def test_bsp_neuron_arithmetic_does_not_depend_on_position(n: int, precision: str, method: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", _CHECK, SMALL_COBAHH, *_overrides(n, precision, method)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert "--xla_cpu_use_fusion_emitters=true" in res["flags"]
    assert res["spikes"] > 100  # the classes spike: thresholds and refractory logic are exercised
    assert res["bad"] == []


def test_lane_flag_is_set_unless_the_user_set_it(monkeypatch) -> None:
    monkeypatch.setattr(device, "_tf_version", lambda: (2, 21))
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1")
    device.prepare_environment()
    flags = os.environ["XLA_FLAGS"].split()
    assert "--xla_cpu_use_fusion_emitters=true" in flags and "--xla_foo=1" in flags
    device.prepare_environment()  # a child process: cluster-sim's own flag is not repeated
    assert os.environ["XLA_FLAGS"].split().count("--xla_cpu_use_fusion_emitters=true") == 1
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=false")  # the user's: kept
    device.prepare_environment()
    assert os.environ["XLA_FLAGS"].split() == ["--xla_cpu_use_fusion_emitters=false", "--xla_cpu_use_thunk_runtime=false",
                                               "--xla_cpu_prefer_vector_width=512",
                                               "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion"]
