"""The two math backends models are written against. ``small`` is the half-width of the Taylor
patch at removable singularities, which depends on the precision."""
from __future__ import annotations

import types

import numpy as np

from cluster_sim.models._rates import small_for


def numpy_ops(precision: str = "float64") -> types.SimpleNamespace:
    return types.SimpleNamespace(exp=np.exp, where=np.where, abs=np.abs, small=small_for(precision), name="numpy")


def tf_ops(precision: str = "float64") -> types.SimpleNamespace:
    import tensorflow as tf

    def where(cond, a, b):  # Python scalars take the dtype of the tensor branch
        # tf.constant, not tf.cast: casting a Python float goes through float32 first.
        if not tf.is_tensor(a):
            a = tf.constant(a, b.dtype) if tf.is_tensor(b) else a
        if not tf.is_tensor(b):
            b = tf.constant(b, a.dtype)
        return tf.where(cond, a, b)

    return types.SimpleNamespace(exp=tf.exp, where=where, abs=tf.abs, small=small_for(precision), name="tensorflow")
