"""Models: discovered from their modules, conditionally linear, and the same equations on
NumPy and TensorFlow."""
from __future__ import annotations

import numpy as np
import pytest

from cluster_sim.models import NEURONS, get_neuron_model
from cluster_sim.models._ops import numpy_ops, tf_ops
from cluster_sim.models.base import Drive


def test_all_models_are_discovered() -> None:
    assert {"cobahh", "hh_squid", "locust_pn", "locust_ln", "passive"} <= set(NEURONS)


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_numpy_and_tensorflow_terms_agree(name: str) -> None:
    import tensorflow as tf

    model = get_neuron_model(name)
    p = model.params()
    rng = np.random.default_rng(0)
    n = 64
    y = {v: (rng.uniform(-80, 40, n) if v == "v" else rng.uniform(0.0, 1.0, n)) for v in model.variables}
    drive = Drive(rng.uniform(0, 5, n), rng.uniform(0, 0.5, n), rng.uniform(-30, 0, n))
    t_np = model.terms(numpy_ops(), p, y, drive)
    t_tf = model.terms(tf_ops(), p, {k: tf.constant(v) for k, v in y.items()},
                       Drive(*(tf.constant(x) for x in drive)))
    assert set(t_np) == set(model.variables)
    for var in model.variables:
        for a_np, a_tf in zip(t_np[var], t_tf[var]):
            a_tf = a_tf.numpy() if hasattr(a_tf, "numpy") else a_tf
            np.testing.assert_allclose(np.broadcast_to(a_tf, (n,)), np.broadcast_to(a_np, (n,)), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name}.{var}")


@pytest.mark.parametrize("name", ["cobahh", "locust_pn", "hh_squid"])
def test_rate_singularities_are_finite_in_float32(name: str) -> None:
    """x/(exp(x)-1) at x = 0 is 0/0 in float32 unless handled (peers_measured.md)."""
    import tensorflow as tf

    model = get_neuron_model(name)
    p = model.params()
    shift = {"cobahh": p.get("V_T_mV", 0.0), "locust_pn": -50.0, "hh_squid": 0.0}[name]
    singular = np.array([13.0, 15.0, 40.0]) + shift if name != "hh_squid" else np.array([-40.0, -55.0, -65.0])
    y = {v: tf.constant(singular if v == "v" else np.full(3, 0.5), tf.float32) for v in model.variables}
    zero = tf.zeros(3, tf.float32)
    terms = model.terms(tf_ops("float32"), p, y, Drive(zero, zero, zero))
    for var, (a, b) in terms.items():
        for x in (a, b):
            x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
            assert np.all(np.isfinite(x)), f"{name}.{var} not finite at the removable singularity"
