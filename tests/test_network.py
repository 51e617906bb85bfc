"""Network construction: per-target seeding makes any split of targets build the same synapses
and initial states; the rules draw what they promise; storage is sparse."""
from __future__ import annotations

import tomllib

import numpy as np
import pytest

from cluster_sim.network.build import build_network, stimulus_targets, Layout
from cluster_sim.spec import load_spec, parse_spec
from tests.conftest import JOBS, SMALL_COBAHH


def _spec(*overrides: str):
    return parse_spec(tomllib.loads(SMALL_COBAHH), list(overrides))


def _synapse_set(net, proj_index: int) -> set[tuple[int, int]]:
    proj = net.projections[proj_index]
    tgt_local = net.populations[proj.target].local
    tgt = tgt_local[proj.target_of_synapse()]
    return set(zip(proj.src.tolist(), tgt.tolist()))


@pytest.mark.parametrize("job", ["cobahh.toml", "antennal_lobe.toml"])
def test_building_targets_in_two_halves_equals_building_all(job: str) -> None:
    spec = load_spec(JOBS / job)
    whole = build_network(spec)
    rng = np.random.default_rng(0)
    halves = [{}, {}]
    for p in spec.populations:
        perm = rng.permutation(p.count)  # an arbitrary, interleaved split
        halves[0][p.name] = np.sort(perm[: p.count // 2])
        halves[1][p.name] = np.sort(perm[p.count // 2:])
    parts = [build_network(spec, h) for h in halves]
    for j in range(len(spec.projections)):
        assert _synapse_set(parts[0], j) | _synapse_set(parts[1], j) == _synapse_set(whole, j)
        assert parts[0].projections[j].n_synapses + parts[1].projections[j].n_synapses == whole.projections[j].n_synapses
    for p in spec.populations:
        for var, values in whole.populations[p.name].init.items():
            for part, h in zip(parts, halves):
                np.testing.assert_array_equal(part.populations[p.name].init[var], values[h[p.name]])
    for s_whole, s0, s1 in zip(whole.stimuli, parts[0].stimuli, parts[1].stimuli):
        for pop, amp in s_whole.amplitude.items():
            np.testing.assert_array_equal(s0.amplitude[pop], amp[halves[0][pop]])
            np.testing.assert_array_equal(s1.amplitude[pop], amp[halves[1][pop]])


def test_seed_changes_network_and_same_seed_repeats() -> None:
    a, b, c = build_network(_spec()), build_network(_spec()), build_network(_spec("simulation.seed=4"))
    assert _synapse_set(a, 0) == _synapse_set(b, 0)
    assert _synapse_set(a, 0) != _synapse_set(c, 0)


def test_bernoulli_statistics() -> None:
    net = build_network(_spec("populations.E.count=2000", "projections.EE.connect.p=0.05"))
    proj = net.projections[0]
    indeg = np.diff(proj.indptr)
    n, p = 2000, 0.05
    assert abs(indeg.mean() - n * p) < 4 * np.sqrt(n * p * (1 - p) / n) * 3, indeg.mean()
    assert abs(indeg.var() / (n * p * (1 - p)) - 1) < 0.15, indeg.var()
    # sources are spread uniformly: out-degree mean equals in-degree mean
    outdeg = np.bincount(proj.src, minlength=n)
    assert abs(outdeg.mean() - indeg.mean()) < 1e-9
    # sorted, distinct sources per target
    for j in range(0, 2000, 97):
        s = proj.src[proj.indptr[j]:proj.indptr[j + 1]]
        assert np.all(np.diff(s) > 0)


def test_no_autapses_and_fixed_indegree() -> None:
    spec = _spec('projections.EE.connect={rule = "fixed_indegree", indegree = 25}', "projections.EE.allow_autapses=false")
    net = build_network(spec)
    proj = net.projections[0]
    assert np.all(np.diff(proj.indptr) == 25)
    tgt = net.populations["E"].local[proj.target_of_synapse()]
    assert not np.any(proj.src == tgt)
    assert len(set(zip(proj.src.tolist(), tgt.tolist()))) == proj.n_synapses


def test_al_has_no_autapses_and_expected_density() -> None:
    net = build_network(load_spec(JOBS / "antennal_lobe.toml"))
    ln_ln = next(p for p in net.projections if p.spec.name == "LN_LN_gaba_a")
    tgt = ln_ln.target_of_synapse()
    assert not np.any(ln_ln.src == tgt)
    total = sum(p.n_synapses for p in net.projections)
    # PSST: ≈1350 ACh + ≈1785 GABA_A synapses (p = 0.5)
    assert 2800 < total < 3500, total


def test_explicit_list_rule() -> None:
    spec = _spec('projections.EE.connect={rule = "list", pairs = [[0, 1], [2, 1], [5, 0], [7, 319]]}')
    net = build_network(spec, {"E": np.array([0, 1]), "I": np.array([], np.int64)})
    assert _synapse_set(net, 0) == {(0, 1), (2, 1), (5, 0)}


def test_synapses_are_sparse_arrays() -> None:
    net = build_network(_spec())
    for proj in net.projections:
        assert proj.indptr.ndim == 1 and proj.src.ndim == 1 and proj.weight.ndim == 1
        assert proj.src.size == proj.indptr[-1]


def test_stimulus_selection_is_psst_count() -> None:
    spec = load_spec(JOBS / "antennal_lobe.toml")
    chosen = stimulus_targets(spec, Layout.of(spec), "odor")
    assert sum(v.size for v in chosen.values()) == int(0.33 * 120) == 39
    assert chosen["PN"].size > 0 and chosen["LN"].size > 0


@pytest.mark.parametrize("p,dense", [(0.5, True), (0.05, False)])
def test_graded_sums_dense_or_ell_equal_the_sum_over_synapses(p: float, dense: bool) -> None:
    """The kernel's graded conductance g[target] = Σ w · open[source], in the form it picks (dense
    at the AL's density, ELL when sparse), equals the sum over the projection's synapses."""
    from cluster_sim.engine.kernel import graded_sum, padded
    from cluster_sim.models.synapses import GradedKinetic

    over = [] if p == 0.5 else ["populations.PN.count=900", "populations.LN.count=300"]
    over += [f"projections.{k}.connect.p={p}" for k in ("PN_LN_ach", "LN_PN_gaba_a", "LN_LN_gaba_a")]
    net = build_network(load_spec(JOBS / "antennal_lobe.toml", over))
    rng = np.random.default_rng(3)
    for proj in (q for q in net.projections if isinstance(q.synapse, GradedKinetic)):
        gs = graded_sum(net, proj)
        assert (gs.src is None) is dense, proj.spec.name
        n_src, n_tgt = net.populations[proj.source].local.size, net.populations[proj.target].local.size
        o = np.zeros(padded(n_src))
        o[:n_src] = rng.random(n_src)
        g = (gs.w * o[:, None]).sum(axis=0) if gs.src is None else (gs.w * o[gs.src]).sum(axis=1)
        want = np.zeros(padded(n_tgt))
        np.add.at(want, proj.target_of_synapse(), np.asarray(proj.weight) * o[proj.src])
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-15, err_msg=proj.spec.name)
        assert proj.src.size > 0
