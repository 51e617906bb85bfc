"""Independent reference implementations used by the correctness tests.

Nothing here imports ``cluster_sim.models`` or ``cluster_sim.engine``: the equations are typed
again from the reference documents (shared/reference/psst_locust_al.md, cobahh.md, and the
Hodgkin–Huxley 1952 paper in the modern sign convention). Only the network *inputs*
(connectivity, initial state, stimulus amplitudes) are taken from the simulator's builder.
"""
