"""The locust antennal lobe written in TensorFlow the way PSST (neurorishika/PSST, Tutorial
"Example Implementation Locust AL" + ``tf_integrator.py``) does it, on the identical network,
initial state and stimulus that cluster-sim builds from ``jobs/antennal_lobe.toml``:

* one flat float64 state vector: V[120], n_K[120], m_Na, h_Na, m_A, h_A [90], m_Ca, h_Ca,
  m_KCa, Ca [30], o_ach[n_ach], o_gaba[n_gaba], fire_t[120] (one open fraction per *synapse*);
* every RHS evaluation scatters the sparse synaptic state into a dense n×n matrix
  (``tensor_scatter_nd_update`` into n² zeros), multiplies by the dense weight matrix and
  reduces over presynaptic cells; the transmitter [T] is computed per presynaptic cell,
  broadcast to n×n and ``boolean_mask``ed back to the synapse list (O(n²) per RHS call);
* the injected current is a dense (n × steps) constant indexed by ``int(t/dt)`` in the graph;
* classic RK4 inside ``tf.scan`` over *all* steps, keeping the full trajectory
  (``concat([y0], ys)``, steps × state), returned to the host like ``sess.run``;
* graph mode (one ``tf.function``, no XLA), rate functions written as PSST writes them.

Spikes: upward crossings of 0 mV in the returned trajectory (PSST's F_b = 0).
"""
from __future__ import annotations

import time

import numpy as np

PHI_K = 3.0 ** ((22.0 - 36.0) / 10.0)
PHI_A = 3.0 ** ((36.0 - 23.5) / 10.0)
PHI_KCA = 2.3 ** ((26.0 - 23.0) / 10.0)


def al_network(duration_ms: float) -> dict:
    """The AL network of jobs/antennal_lobe.toml as dense PSST-style matrices (row = post)."""
    from _common import cluster_sim_spec
    from cluster_sim.network.build import build_network

    spec = cluster_sim_spec("antennal_lobe.toml", [f"simulation.duration_ms={duration_ms}"])
    net = build_network(spec)
    pn, ln = net.populations["PN"], net.populations["LN"]
    p_n, l_n = pn.count, ln.count
    n = p_n + l_n
    off = {"PN": 0, "LN": p_n}
    ach_mat, gaba_mat = np.zeros((n, n)), np.zeros((n, n))
    g_ach, g_gaba = np.zeros((n, n)), np.zeros((n, n))
    syn = {}
    for proj in net.projections:
        pre = proj.src + off[proj.source]
        post = proj.target_of_synapse() + off[proj.target]
        if proj.synapse.name == "ach_pulse":
            ach_mat[post, pre] = 1.0
            g_ach[post, pre] = proj.weight
            syn["ach"] = proj.params
        else:
            gaba_mat[post, pre] = 1.0
            g_gaba[post, pre] = proj.weight
            syn["gaba"] = proj.params
    stim = net.stimuli[0]
    amp = np.concatenate([stim.amplitude["PN"], stim.amplitude["LN"]])
    sp = stim.params
    init = {k: v for k, v in pn.init.items()}
    return {"p_n": p_n, "l_n": l_n, "n": n, "ach_mat": ach_mat, "gaba_mat": gaba_mat, "g_ach": g_ach,
            "g_gaba": g_gaba, "syn": syn, "amp": amp, "stim": sp, "pn": pn.params, "ln": ln.params,
            "init_pn": init, "init_ln": dict(ln.init)}


def odor(t: np.ndarray, sp: dict) -> np.ndarray:
    y = np.zeros_like(t)
    on = (t >= sp["start_ms"]) & (t < sp["stop_ms"])
    y[on] = 1.0 - np.exp(-(t[on] - sp["start_ms"]) / sp["rise_tau_ms"])
    off = t >= sp["stop_ms"]
    y[off] = sp["release_level"] * np.exp(-(t[off] - sp["stop_ms"]) / sp["decay_tau_ms"])
    return y


def simulate(duration_ms: float, dt: float = 0.01) -> dict:
    t_start = time.perf_counter()
    import tensorflow as tf

    t_import = time.perf_counter() - t_start
    t_b0 = time.perf_counter()
    A = al_network(duration_ms)
    p_n, l_n, n = A["p_n"], A["l_n"], A["n"]
    PN, LN = A["pn"], A["ln"]
    ach_flat = A["ach_mat"].reshape(-1) == 1
    gaba_flat = A["gaba_mat"].reshape(-1) == 1
    n_ach, n_gaba = int(ach_flat.sum()), int(gaba_flat.sum())
    f64 = tf.float64
    ach_mat = tf.constant(A["ach_mat"], f64)
    gaba_mat = tf.constant(A["gaba_mat"], f64)
    g_ach = tf.constant(A["g_ach"], f64)
    g_gaba = tf.constant(A["g_gaba"], f64)
    ach_idx = tf.constant(np.flatnonzero(ach_flat)[:, None], tf.int64)
    gaba_idx = tf.constant(np.flatnonzero(gaba_flat)[:, None], tf.int64)
    ach_mask = tf.constant(ach_flat)
    gaba_mask = tf.constant(gaba_flat)
    sa, sg = A["syn"]["ach"], A["syn"]["gaba"]
    t = np.arange(0.0, duration_ms + dt / 2, dt)
    # PSST keeps the whole input current as a dense (n × steps) array inside the graph
    current_input = tf.constant(A["amp"][:, None] * odor(t, A["stim"])[None, :], f64)

    def vec(pn_val: float, ln_val: float) -> np.ndarray:
        return np.concatenate([np.full(p_n, pn_val), np.full(l_n, ln_val)])

    g_L, E_L = vec(PN["g_L_mS_cm2"], LN["g_L_mS_cm2"]), vec(PN["E_L_mV"], LN["E_L_mV"])
    g_KL, E_KL = vec(PN["g_KL_mS_cm2"], LN["g_KL_mS_cm2"]), vec(PN["E_KL_mV"], LN["E_KL_mV"])
    g_K, E_K = vec(PN["g_K_mS_cm2"], LN["g_K_mS_cm2"]), vec(PN["E_K_mV"], LN["E_K_mV"])
    C_m = vec(PN["C_uF_cm2"], LN["C_uF_cm2"])

    # state layout
    sl = {}
    pos = 0
    for name, size in (("V", n), ("n_K", n), ("m_Na", p_n), ("h_Na", p_n), ("m_A", p_n), ("h_A", p_n),
                       ("m_Ca", l_n), ("h_Ca", l_n), ("m_KCa", l_n), ("Ca", l_n), ("o_ach", n_ach),
                       ("o_gaba", n_gaba), ("fire_t", n)):
        sl[name] = (pos, pos + size)
        pos += size
    n_state = pos
    ipn, iln = A["init_pn"], A["init_ln"]
    y0 = np.zeros(n_state)
    y0[slice(*sl["V"])] = np.concatenate([ipn["v"], iln["v"]])
    y0[slice(*sl["n_K"])] = np.concatenate([ipn["n_k"], iln["n_k"]])
    for k_psst, k_cs, src in (("m_Na", "m_na", ipn), ("h_Na", "h_na", ipn), ("m_A", "m_a", ipn), ("h_A", "h_a", ipn),
                              ("m_Ca", "m_ca", iln), ("h_Ca", "h_ca", iln), ("m_KCa", "m_kca", iln), ("Ca", "ca", iln)):
        y0[slice(*sl[k_psst])] = src[k_cs]
    y0[slice(*sl["fire_t"])] = -(duration_ms + 1.0)

    def part(X, name):  # noqa: ANN001
        a, b = sl[name]
        return X[a:b]

    def dXdt(X, t):  # noqa: ANN001, C901
        V = part(X, "V")
        V_p, V_l = V[:p_n], V[p_n:]
        n_K, m_Na, h_Na, m_A, h_A = (part(X, k) for k in ("n_K", "m_Na", "h_Na", "m_A", "h_A"))
        m_Ca, h_Ca, m_KCa, Ca = (part(X, k) for k in ("m_Ca", "h_Ca", "m_KCa", "Ca"))
        o_ach, o_gaba, fire_t = part(X, "o_ach"), part(X, "o_gaba"), part(X, "fire_t")
        # currents
        I_K = g_K * n_K ** 4 * (V - E_K)
        I_L = g_L * (V - E_L)
        I_KL = g_KL * (V - E_KL)
        I_Na = PN["g_Na_mS_cm2"] * m_Na ** 3 * h_Na * (V_p - PN["E_Na_mV"])
        I_A = PN["g_A_mS_cm2"] * m_A ** 4 * h_A * (V_p - PN["E_A_mV"])
        I_Ca = LN["g_Ca_mS_cm2"] * m_Ca ** 2 * h_Ca * (V_l - LN["E_Ca_mV"])
        I_KCa = LN["g_KCa_mS_cm2"] * m_KCa * (V_l - LN["E_KCa_mV"])
        # synapses: sparse state -> dense n x n every call (PSST)
        o_ach_m = tf.reshape(tf.tensor_scatter_nd_update(tf.zeros([n * n], f64), ach_idx, o_ach), (n, n))
        I_ach = tf.reduce_sum(g_ach * o_ach_m, 1) * (V - sa["E_mV"])
        o_gaba_m = tf.reshape(tf.tensor_scatter_nd_update(tf.zeros([n * n], f64), gaba_idx, o_gaba), (n, n))
        I_gaba = tf.reduce_sum(g_gaba * o_gaba_m, 1) * (V - sg["E_mV"])
        I_inj = current_input[:, tf.cast(t / dt, tf.int32)]
        zeros_l, zeros_p = tf.zeros([l_n], f64), tf.zeros([p_n], f64)
        I_ion = I_K + I_L + I_KL + tf.concat([I_Na + I_A, zeros_l], 0) + tf.concat([zeros_p, I_Ca + I_KCa], 0)
        dV = (I_inj - I_ion - I_ach - I_gaba) / C_m
        # K (all cells)
        Vs = V + 50.0
        a_n = 0.02 * (15.0 - Vs) / (tf.exp((15.0 - Vs) / 5.0) - 1.0)
        b_n = 0.5 * tf.exp((10.0 - Vs) / 40.0)
        d_nK = -(n_K - a_n / (a_n + b_n)) * ((a_n + b_n) * PHI_K)
        # Na (PN)
        Vp = V_p + 50.0
        a_m = 0.32 * (13.0 - Vp) / (tf.exp((13.0 - Vp) / 4.0) - 1.0)
        b_m = 0.28 * (Vp - 40.0) / (tf.exp((Vp - 40.0) / 5.0) - 1.0)
        a_h = 0.128 * tf.exp((17.0 - Vp) / 18.0)
        b_h = 4.0 / (tf.exp((40.0 - Vp) / 5.0) + 1.0)
        d_mNa = -(m_Na - a_m / (a_m + b_m)) * ((a_m + b_m) * PHI_K)
        d_hNa = -(h_Na - a_h / (a_h + b_h)) * ((a_h + b_h) * PHI_K)
        # A (PN)
        m_A0 = 1.0 / (1.0 + tf.exp(-(V_p + 60.0) / 8.5))
        h_A0 = 1.0 / (1.0 + tf.exp((V_p + 78.0) / 6.0))
        tau_mA = 1.0 / (tf.exp((V_p + 35.82) / 19.69) + tf.exp(-(V_p + 79.69) / 12.7) + 0.37) / PHI_A
        tau_hA = tf.where(V_p < -63.0, 1.0 / (tf.exp((V_p + 46.05) / 5.0) + tf.exp(-(V_p + 238.4) / 37.45)) / PHI_A,
                          19.0 / PHI_A * tf.ones_like(V_p))
        d_mA = -(m_A - m_A0) / tau_mA
        d_hA = -(h_A - h_A0) / tau_hA
        # Ca, K(Ca), calcium (LN)
        m_Ca0 = 1.0 / (1.0 + tf.exp(-(V_l + 20.0) / 6.5))
        h_Ca0 = 1.0 / (1.0 + tf.exp((V_l + 25.0) / 12.0))
        tau_hCa = 0.3 * tf.exp((V_l - 40.0) / 13.0) + 0.002 * tf.exp((60.0 - V_l) / 29.0)
        d_mCa = -(m_Ca - m_Ca0) / 1.5
        d_hCa = -(h_Ca - h_Ca0) / tau_hCa
        a_kca = 0.01 * Ca
        d_mKCa = -(m_KCa - a_kca / (a_kca + 0.02)) * ((a_kca + 0.02) * PHI_KCA)
        d_Ca = -LN["A_Ca"] * I_Ca - (Ca - LN["Ca0_mM"]) / LN["tau_Ca_ms"]
        # transmitter per presynaptic cell -> n x n -> back to the synapse list (PSST)
        since = t - fire_t
        T_ach = tf.where((since > 0.0) & (since < sa["t_max_ms"]), sa["A_mM"] * tf.ones_like(fire_t), tf.zeros_like(fire_t))
        T_ach_syn = tf.boolean_mask(tf.reshape(ach_mat * T_ach[None, :], [-1]), ach_mask)
        d_ach = sa["alpha_per_mM_ms"] * (1.0 - o_ach) * T_ach_syn - sa["beta_per_ms"] * o_ach
        T_gaba = 1.0 / (1.0 + tf.exp(-(V - sg["V0_mV"]) / sg["sigma_mV"]))
        T_gaba_syn = tf.boolean_mask(tf.reshape(gaba_mat * T_gaba[None, :], [-1]), gaba_mask)
        d_gaba = sg["alpha_per_mM_ms"] * (1.0 - o_gaba) * T_gaba_syn - sg["beta_per_ms"] * o_gaba
        return tf.concat([dV, d_nK, d_mNa, d_hNa, d_mA, d_hA, d_mCa, d_hCa, d_mKCa, d_Ca, d_ach, d_gaba,
                          tf.zeros([n], f64)], 0)

    v_a, v_b = sl["V"]
    f_a, f_b = sl["fire_t"]

    def scan_func(y, t_dt):  # noqa: ANN001  (PSST tf_integrator: RK4 + fire-time update)
        t, h = t_dt[0], t_dt[1]
        k1 = dXdt(y, t)
        k2 = dXdt(y + h * k1 / 2.0, t + h / 2.0)
        k3 = dXdt(y + h * k2 / 2.0, t + h / 2.0)
        k4 = dXdt(y + h * k3, t + h)
        out = y + tf.add_n([k1, 2 * k2, 2 * k3, k4]) * (h / 6.0)
        v_old, v_new = y[v_a:v_b], out[v_a:v_b]
        fire = y[f_a:f_b]
        fire = fire + tf.where((v_old < 0.0) & (v_new >= 0.0), t - fire, tf.zeros_like(fire))
        return tf.concat([out[:f_a], fire], 0)

    tt = tf.constant(t, f64)

    @tf.function(autograph=False)
    def odeint(y0):  # noqa: ANN001
        elems = tf.stack([tt[:-1], tt[1:] - tt[:-1]], axis=1)
        ys = tf.scan(scan_func, elems, initializer=y0)
        return tf.concat([y0[None, :], ys], 0)

    y0_t = tf.constant(y0, f64)
    odeint.get_concrete_function(y0_t)
    build_s = time.perf_counter() - t_b0
    t0 = time.perf_counter()
    traj = odeint(y0_t).numpy()
    run_s = time.perf_counter() - t0
    V = traj[:, v_a:v_b]
    cross = (V[:-1] < 0.0) & (V[1:] >= 0.0)
    counts = cross.sum(axis=0)
    sec = duration_ms * 1e-3
    return {"run_s": run_s, "build_s": build_s, "import_s": t_import, "steps": len(t) - 1, "n_state": n_state,
            "n_ach": n_ach, "n_gaba": n_gaba, "trajectory_mb": traj.nbytes / 2 ** 20,
            "rates_hz": {"PN": float(counts[:p_n].sum() / (p_n * sec)), "LN": float(counts[p_n:].sum() / (l_n * sec))},
            "finite": bool(np.isfinite(traj).all()), "ms_per_step": run_s / (len(t) - 1) * 1e3}
