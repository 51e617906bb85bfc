"""Frozen dataclasses for a job spec, and the validation that builds them from plain dicts.

Units live in key names (``dt_ms``, ``delay_ms``, ``weight_nS``). Every check raises
``ConfigError(key, value, problem, fix)`` naming the dotted key, so a user sees *which*
line of the TOML file is wrong and what to write instead.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from cluster_sim.errors import ConfigError

METHODS = ("euler", "rk4", "exp_euler")
PRECISIONS = ("float64", "float32")
MODES = ("bsp", "async")
DEVICES = ("auto", "cpu", "gpu")
RULES = ("bernoulli", "fixed_indegree", "list", "all_to_all")
EXCHANGES = ("allgather", "alltoall", "horovod")
PARTITIONS = ("auto", "block", "round_robin", "components")


@dataclass(frozen=True)
class SimulationSpec:
    duration_ms: float
    seed: int = 0
    mode: str = "bsp"


@dataclass(frozen=True)
class IntegratorSpec:
    method: str = "rk4"
    dt_ms: float = 0.01
    precision: str = "float64"
    rtol: float = 1e-6  # async mode only
    atol: float = 1e-6  # async mode only


@dataclass(frozen=True)
class EngineSpec:
    device: str = "auto"
    jit_compile: bool = True
    interval_ms: float = 1.0  # used only when no projection has a delay (all couplings in-step)
    exchange: str = "allgather"
    partition: str = "auto"  # resolved by build_spec: "components" with in-step couplings, else "block"
    loop: str = "while"  # how the compiled interval iterates its steps: "while" or "scan"
    cpu_threads: int = 0  # TensorFlow intra-op threads per rank on CPU; 0 = automatic
    # BSP: "on" integrates the next epoch (half an interval) while this one's spikes are
    # exchanged and delivered; "off" one interval at a time; "auto" = on where the kernel runs on
    # a GPU (the host is then free), off on CPU (where it measured slower: the kernel thread and
    # the host thread compete for the rank's cores). Results are bitwise the same either way.
    overlap: str = "auto"
    # XLA's persistent compilation cache: "auto" ($CLUSTER_SIM_XLA_CACHE, else the user's cache
    # dir), "off", or a folder (runtime/xla_cache.py). Not part of the resume digest.
    xla_cache: str = "auto"


@dataclass(frozen=True)
class PopulationSpec:
    name: str
    model: str
    count: int
    params: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectRule:
    rule: str
    p: float = 0.0
    indegree: int = 0
    pairs: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class ProjectionSpec:
    name: str
    source: str
    target: str
    synapse: str
    connect: ConnectRule
    weight: float
    weight_key: str
    delay_ms: float
    allow_autapses: bool = True
    params: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StimulusSpec:
    name: str
    waveform: str
    populations: tuple[str, ...]
    fraction: float | None = None
    count: int | None = None
    params: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordingSpec:
    name: str
    population: str
    variable: str
    neurons: tuple[int, ...]
    sampling_ms: float


@dataclass(frozen=True)
class OutputSpec:
    dir: str = "runs/out"
    flush_every_ms: float = 50.0
    checkpoint_every_ms: float = 0.0  # 0 = only on signals


@dataclass(frozen=True)
class JobSpec:
    name: str
    simulation: SimulationSpec
    integrator: IntegratorSpec
    engine: EngineSpec
    populations: tuple[PopulationSpec, ...]
    projections: tuple[ProjectionSpec, ...]
    stimuli: tuple[StimulusSpec, ...]
    recordings: tuple[RecordingSpec, ...]
    output: OutputSpec
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # validated input, for provenance

    def population(self, name: str) -> PopulationSpec:
        for pop in self.populations:
            if pop.name == name:
                return pop
        raise KeyError(name)

    @property
    def n_neurons(self) -> int:
        return sum(p.count for p in self.populations)


# ----------------------------------------------------------------------------- validation


class _Table:
    """Reads one TOML table, remembers which keys were used, rejects the rest."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path, data, "must be a table", f"write [{path}] with key = value lines")
        self.data, self.path = data, path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = ...) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise ConfigError(self.key(name), None, "is required", f"add {name} = ... to [{self.path}]")
            return default
        return self.data[name]

    def number(self, name: str, default: Any = ..., *, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False, fix: str = "") -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self.key(name), value, "must be a number", fix or f"write {name} = 1.0")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(self.key(name), value, "must be finite", fix or "give a finite number")
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise ConfigError(self.key(name), value, f"must be {'>' if lo_open else '>='} {lo}", fix or f"use a value {'>' if lo_open else '>='} {lo}")
        if hi is not None and value > hi:
            raise ConfigError(self.key(name), value, f"must be <= {hi}", fix or f"use a value <= {hi}")
        return value

    def integer(self, name: str, default: Any = ..., *, lo: int | None = None, hi: int | None = None) -> int:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), value, "must be an integer", f"write {name} = 10 (no quotes, no decimals)")
        if lo is not None and value < lo:
            raise ConfigError(self.key(name), value, f"must be >= {lo}", f"use an integer >= {lo}")
        if hi is not None and value > hi:
            raise ConfigError(self.key(name), value, f"must be <= {hi}", f"use an integer <= {hi}")
        return value

    def string(self, name: str, default: Any = ..., *, choices: tuple[str, ...] | None = None) -> str:
        value = self.raw(name, default)
        if not isinstance(value, str):
            raise ConfigError(self.key(name), value, "must be a string", f'write {name} = "..."')
        if choices is not None and value not in choices:
            raise ConfigError(self.key(name), value, f"is not one of {', '.join(choices)}", f"use one of: {', '.join(choices)}")
        return value

    def boolean(self, name: str, default: Any = ...) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), value, "must be true or false", f"write {name} = true")
        return value

    def sub(self, name: str, default: Any = ...) -> "_Table":
        return _Table(self.raw(name, default), self.key(name))

    def finish(self, extra_valid: tuple[str, ...] = ()) -> None:
        unknown = sorted(set(self.data) - self.used - set(extra_valid))
        if unknown:
            valid = sorted(self.used | set(extra_valid))
            raise ConfigError(self.key(unknown[0]), self.data[unknown[0]], "unknown key",
                              f"valid keys in [{self.path or 'top level'}] are: {', '.join(valid)}")


def _xla_cache_setting(t: "_Table") -> str:
    value = t.string("xla_cache", "auto")
    if value.strip() == "" or "\x00" in value:
        raise ConfigError(t.key("xla_cache"), value, "is not a folder",
                          'write xla_cache = "auto" (the default), "off", or a folder such as "/scratch/$USER/xla"')
    return value


_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _check_name(key: str, name: str) -> None:
    if not name or not set(name) <= _NAME_OK or len(name) > 64:
        raise ConfigError(key, name, "names may use letters, digits, '_' and '-' (at most 64)",
                          "rename the table, e.g. [populations.PN]")


def _param_table(table: _Table, name: str, defaults: Mapping[str, float], what: str) -> dict[str, float]:
    params = table.sub(name, {})
    out: dict[str, float] = {}
    for key in list(params.data):
        if key not in defaults:
            raise ConfigError(params.key(key), params.data[key], f"is not a parameter of {what}",
                              f"valid parameters: {', '.join(sorted(defaults))}")
        out[key] = params.number(key)
    params.finish()
    return out


def _check_model_params(model: Any, params: Mapping[str, float], path: str) -> None:
    """A model's own checks on its full parameters (e.g. a Poisson rate >= 0), if it has any."""
    check = getattr(model, "check_params", None)
    if check is not None:
        check(model.params(params), lambda k: f"{path}.{k}")


def _check_source_roles(jt: _Table, tgt_model: Any, src_model: Any, syn: Any) -> None:
    """Spike sources only send, and only spikes: they cannot be targets, nor drive a graded
    (in-step) synapse, which would read a presynaptic state they do not have."""
    if tgt_model.is_source:
        raise ConfigError(jt.key("target"), jt.data["target"], f"is a spike source (model {tgt_model.name!r})",
                          "spike sources receive no input; target a neuron population")
    if src_model.is_source and syn.kind != "event":
        raise ConfigError(jt.key("synapse"), syn.name, f"is a graded (in-step) synapse; source model {src_model.name!r} "
                          "only emits spikes", "use a spike-triggered synapse such as exp_cond_exc")


def build_spec(data: Mapping[str, Any], *, default_name: str = "job") -> JobSpec:
    """Validate a plain dict (parsed TOML) into a :class:`JobSpec`; raises ``ConfigError``."""
    from cluster_sim.models import get_neuron_model, get_synapse_model, get_waveform, neuron_model_names, synapse_model_names, waveform_names

    top = _Table(data, "")
    name = top.string("name", default_name)
    _check_name("name", name)

    sim_t = top.sub("simulation")
    simulation = SimulationSpec(
        duration_ms=sim_t.number("duration_ms", lo=0.0, lo_open=True, fix="give the simulated time in ms, e.g. duration_ms = 1000"),
        seed=sim_t.integer("seed", 0, lo=0, hi=2**63 - 1),
        mode=sim_t.string("mode", "bsp", choices=MODES),
    )
    sim_t.finish()

    int_t = top.sub("integrator", {})
    integrator = IntegratorSpec(
        method=int_t.string("method", "rk4", choices=METHODS),
        dt_ms=int_t.number("dt_ms", 0.01, lo=0.0, lo_open=True, hi=10.0, fix="use a positive step such as dt_ms = 0.01"),
        precision=int_t.string("precision", "float64", choices=PRECISIONS),
        rtol=int_t.number("rtol", 1e-6, lo=0.0, lo_open=True, hi=0.1),
        atol=int_t.number("atol", 1e-6, lo=0.0, lo_open=True, hi=1.0),
    )
    int_t.finish()
    n_steps = simulation.duration_ms / integrator.dt_ms
    if n_steps > 2**40:
        raise ConfigError("integrator.dt_ms", integrator.dt_ms, f"gives {n_steps:.3g} steps", "use a larger dt_ms or a shorter duration_ms")

    eng_t = top.sub("engine", {})
    engine = EngineSpec(
        device=eng_t.string("device", "auto", choices=DEVICES),
        jit_compile=eng_t.boolean("jit_compile", True),
        interval_ms=eng_t.number("interval_ms", 1.0, lo=0.0, lo_open=True),
        exchange=eng_t.string("exchange", "allgather", choices=EXCHANGES),
        partition=eng_t.string("partition", "auto", choices=PARTITIONS),
        loop=eng_t.string("loop", "while", choices=("while", "scan")),
        cpu_threads=eng_t.integer("cpu_threads", 0, lo=0, hi=4096),
        overlap=eng_t.string("overlap", "auto", choices=("auto", "on", "off")),
        xla_cache=_xla_cache_setting(eng_t),
    )
    eng_t.finish()

    pops_t = top.sub("populations")
    if not pops_t.data:
        raise ConfigError("populations", {}, "no population defined", "add a [populations.NAME] table with model and count")
    populations = []
    for pname in list(pops_t.data):
        _check_name(f"populations.{pname}", pname)
        pt = pops_t.sub(pname)
        model_name = pt.string("model")
        try:
            model = get_neuron_model(model_name)
        except KeyError:
            raise ConfigError(pt.key("model"), model_name, "unknown neuron model",
                              f"use one of: {', '.join(neuron_model_names())}") from None
        count = pt.integer("count", lo=1, hi=2**31 - 1)
        params = _param_table(pt, "params", model.defaults, f"neuron model {model_name!r}")
        pt.finish()
        _check_model_params(model, params, pt.key("params"))
        populations.append(PopulationSpec(pname, model_name, count, params))
    pop_by_name = {p.name: p for p in populations}

    projections = []
    proj_t = top.sub("projections", {})
    for jname in list(proj_t.data):
        _check_name(f"projections.{jname}", jname)
        jt = proj_t.sub(jname)
        src = jt.string("source")
        tgt = jt.string("target")
        for role, pop in (("source", src), ("target", tgt)):
            if pop not in pop_by_name:
                raise ConfigError(jt.key(role), pop, "names no population", f"use one of: {', '.join(pop_by_name)}")
        syn_name = jt.string("synapse")
        try:
            syn = get_synapse_model(syn_name)
        except KeyError:
            raise ConfigError(jt.key("synapse"), syn_name, "unknown synapse model",
                              f"use one of: {', '.join(synapse_model_names())}") from None
        tgt_model = get_neuron_model(pop_by_name[tgt].model)
        _check_source_roles(jt, tgt_model, get_neuron_model(pop_by_name[src].model), syn)
        problem = syn.incompatibility(tgt_model)
        if problem:
            raise ConfigError(jt.key("synapse"), syn_name, problem, "pick a synapse model that fits the target's neuron model")
        wkey = syn.weight_key(tgt_model)
        weight_keys = [k for k in jt.data if k.startswith("weight")]
        if not weight_keys:
            raise ConfigError(jt.key(wkey), None, "is required", f"add {wkey} = ... (unit in the key)")
        if weight_keys != [wkey]:
            bad = next(k for k in weight_keys if k != wkey)
            raise ConfigError(jt.key(bad), jt.data[bad], f"wrong weight key for synapse {syn_name!r} onto model {tgt_model.name!r}",
                              f"write {wkey} = ... (the unit is part of the key)")
        weight = jt.number(wkey, lo=0.0, fix="weights are magnitudes; the sign comes from the reversal potential")
        delay = jt.number("delay_ms", syn.default_delay_ms, lo=0.0, fix="delays cannot be negative; use delay_ms >= 0")
        # A spike-triggered delay is checked against the mode by run.check (on the dt grid in BSP).
        if syn.kind != "event" and delay != syn.default_delay_ms and not syn.accepts_delay:
            raise ConfigError(jt.key("delay_ms"), delay, f"synapse {syn_name!r} couples in-step and has no delay",
                              "remove delay_ms from this projection")
        ct = jt.sub("connect")
        rule = ct.string("rule", choices=RULES)
        n_src = pop_by_name[src].count
        n_tgt = pop_by_name[tgt].count
        if rule == "bernoulli":
            conn = ConnectRule(rule, p=ct.number("p", lo=0.0, hi=1.0, fix="p is a probability: 0 <= p <= 1"))
        elif rule == "fixed_indegree":
            conn = ConnectRule(rule, indegree=ct.integer("indegree", lo=0, hi=n_src))
        elif rule == "all_to_all":
            conn = ConnectRule(rule)
        else:
            pairs_raw = ct.raw("pairs")
            if not isinstance(pairs_raw, list):
                raise ConfigError(ct.key("pairs"), pairs_raw, "must be a list of [source, target] index pairs", "write pairs = [[0, 1], [2, 3]]")
            pairs = []
            for idx, pair in enumerate(pairs_raw):
                ok = isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
                if not ok or not (0 <= pair[0] < n_src and 0 <= pair[1] < n_tgt):
                    raise ConfigError(f"{ct.key('pairs')}[{idx}]", pair, f"must be [source index < {n_src}, target index < {n_tgt}]",
                                      "indices count from 0 within each population")
                pairs.append((pair[0], pair[1]))
            conn = ConnectRule(rule, pairs=tuple(pairs))
        ct.finish()
        autapses = jt.boolean("allow_autapses", True)
        params = _param_table(jt, "params", syn.defaults, f"synapse model {syn_name!r}")
        jt.finish()
        _check_model_params(syn, params, jt.key("params"))
        projections.append(ProjectionSpec(jname, src, tgt, syn_name, conn, weight, wkey, delay, autapses, params))

    stimuli = []
    stim_t = top.sub("stimuli", {})
    for sname in list(stim_t.data):
        _check_name(f"stimuli.{sname}", sname)
        st = stim_t.sub(sname)
        wname = st.string("waveform")
        try:
            wave = get_waveform(wname)
        except KeyError:
            raise ConfigError(st.key("waveform"), wname, "unknown waveform", f"use one of: {', '.join(waveform_names())}") from None
        pops_raw = st.raw("populations")
        if isinstance(pops_raw, str):
            pops_raw = [pops_raw]
        if not isinstance(pops_raw, list) or not pops_raw:
            raise ConfigError(st.key("populations"), pops_raw, "must be a population name or a list of them", 'write populations = ["PN", "LN"]')
        for pop in pops_raw:
            if pop not in pop_by_name:
                raise ConfigError(st.key("populations"), pop, "names no population", f"use one of: {', '.join(pop_by_name)}")
            if get_neuron_model(pop_by_name[pop].model).is_source:
                raise ConfigError(st.key("populations"), pop, "is a spike source: it has no membrane to inject current into",
                                  "stimulate neuron populations only (set a source's rate in its params)")
        fraction = st.number("fraction", None, lo=0.0, hi=1.0) if st.has("fraction") else None
        n_cells = st.integer("count", None, lo=0) if st.has("count") else None
        if fraction is not None and n_cells is not None:
            raise ConfigError(st.key("count"), n_cells, "give either fraction or count, not both", "remove one of them")
        total = sum(pop_by_name[p].count for p in pops_raw)
        if n_cells is not None and n_cells > total:
            raise ConfigError(st.key("count"), n_cells, f"exceeds the {total} neurons of {pops_raw}", f"use count <= {total}")
        units = {get_neuron_model(pop_by_name[p].model).current_unit for p in pops_raw}
        if len(units) > 1:
            raise ConfigError(st.key("populations"), pops_raw, f"mixes current units {sorted(units)}", "stimulate populations of one unit per stimulus")
        akey = f"amplitude_{units.pop()}"
        given = [k for k in st.data if k.startswith("amplitude")]
        if given != [akey]:
            raise ConfigError(st.key(given[0] if given else akey), st.data.get(given[0]) if given else None,
                              "amplitude missing or with the wrong unit", f"write {akey} = ... (unit in the key)")
        params = {"amplitude": st.number(akey)}
        for key in wave.defaults:
            if st.has(key):
                params[key] = st.number(key)
        st.finish(tuple(wave.defaults))
        params = {**wave.defaults, **params}
        wave.check(params, st.key)
        stimuli.append(StimulusSpec(sname, wname, tuple(pops_raw), fraction, n_cells, params))

    recordings = []
    rec_t = top.sub("recordings", {})
    for rname in list(rec_t.data):
        _check_name(f"recordings.{rname}", rname)
        rt = rec_t.sub(rname)
        pop = rt.string("population")
        if pop not in pop_by_name:
            raise ConfigError(rt.key("population"), pop, "names no population", f"use one of: {', '.join(pop_by_name)}")
        model = get_neuron_model(pop_by_name[pop].model)
        var = rt.string("variable", "v")
        if model.is_source:
            raise ConfigError(rt.key("population"), pop, "is a spike source: it has no state variables to record",
                              "its spikes are in spikes.h5; record a neuron population here")
        if var not in model.variables:
            raise ConfigError(rt.key("variable"), var, f"is not a state variable of {model.name!r}",
                              f"use one of: {', '.join(model.variables)}")
        neurons_raw = rt.raw("neurons")
        n_pop = pop_by_name[pop].count
        if isinstance(neurons_raw, int) and not isinstance(neurons_raw, bool):
            if not 1 <= neurons_raw <= n_pop:
                raise ConfigError(rt.key("neurons"), neurons_raw, f"must be between 1 and {n_pop} (the first N neurons)", f"use neurons = {min(n_pop, 10)}")
            neurons = tuple(range(neurons_raw))
        elif isinstance(neurons_raw, list) and neurons_raw and all(isinstance(v, int) and not isinstance(v, bool) for v in neurons_raw):
            bad = [v for v in neurons_raw if not 0 <= v < n_pop]
            if bad:
                raise ConfigError(rt.key("neurons"), bad[0], f"is outside population {pop!r} (0..{n_pop - 1})", "use indices within the population")
            if len(set(neurons_raw)) != len(neurons_raw):
                raise ConfigError(rt.key("neurons"), neurons_raw, "lists a neuron twice", "remove the duplicates")
            neurons = tuple(neurons_raw)
        else:
            raise ConfigError(rt.key("neurons"), neurons_raw, "must be a count or a list of neuron indices", "write neurons = [0, 1, 2] or neurons = 5")
        sampling = rt.number("sampling_ms", integrator.dt_ms, lo=0.0, lo_open=True)
        rt.finish()
        recordings.append(RecordingSpec(rname, pop, var, neurons, sampling))

    out_t = top.sub("output", {})
    output = OutputSpec(
        dir=out_t.string("dir", f"runs/{name}"),
        flush_every_ms=out_t.number("flush_every_ms", 50.0, lo=0.0, lo_open=True),
        checkpoint_every_ms=out_t.number("checkpoint_every_ms", 0.0, lo=0.0),
    )
    out_t.finish()
    top.finish()

    if engine.partition == "auto":
        # Graded (in-step) couplings must not be cut between ranks: keep their components
        # together; without them contiguous blocks are cheapest. run.json reports the choice.
        graded = any(get_synapse_model(j.synapse).kind == "graded" for j in projections)
        engine = dataclasses.replace(engine, partition="components" if graded else "block")
    spec = JobSpec(name, simulation, integrator, engine, tuple(populations), tuple(projections),
                   tuple(stimuli), tuple(recordings), output, raw=data)
    return spec
