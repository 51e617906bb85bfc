"""Synapse models.

Two kinds, which the engine treats differently:

* ``event``: a presynaptic spike, after the projection's delay, adds the weight to a state
  variable of the target (a conductance jump, decayed by the target's own equation). Delivered
  between intervals through a ring buffer; only the spiking sources' synapses are touched.
* ``graded``: a kinetic scheme whose transmitter depends on the presynaptic neuron's state at the
  current time (its voltage, or the time of its last spike). Its state obeys the same ODE for
  every synapse of one source (PSST initialises all of them to 0), so it is stored once per
  source neuron; the target sees g_i = Σ_syn w_syn · open(source). Evaluated inside every step.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from cluster_sim.models.base import Bound, NeuronModel, Terms, any_value, check_ranges, non_negative, positive

# Ranges of every synapse parameter name used below (kinetic rates >= 0, decay rates and
# widths > 0, reversal/half-activation potentials anything finite).
SYNAPSE_RANGES: dict[str, Bound] = {
    "alpha_per_mM_ms": non_negative("a binding rate"), "beta_per_ms": positive("an unbinding (decay) rate"),
    "E_mV": any_value("a reversal potential"), "A_mM": non_negative("a transmitter concentration"),
    "t_max_ms": positive("the transmitter pulse duration"), "V0_mV": any_value("half-activation potential"),
    "sigma_mV": positive("the slope of the release sigmoid"),
    "K1_per_mM_ms": non_negative("a binding rate"), "K2_per_ms": positive("a decay rate"),
    "K3_per_ms": non_negative("a G-protein activation rate"), "K4_per_ms": positive("a decay rate"),
    "Kd": positive("a dissociation constant"),
}


class SynapseModel:
    name: str = ""
    kind: str = "event"  # "event" or "graded"
    defaults: Mapping[str, float] = {}
    default_delay_ms: float = 1.0
    accepts_delay: bool = True
    description: str = ""

    def weight_key(self, target: NeuronModel) -> str:
        return f"weight_{target.conductance_unit}"

    def incompatibility(self, target: NeuronModel) -> str | None:
        return None

    def params(self, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
        p = dict(self.defaults)
        p.update(overrides or {})
        return p

    @property
    def param_ranges(self) -> Mapping[str, Bound]:
        return {k: SYNAPSE_RANGES[k] for k in self.defaults if k in SYNAPSE_RANGES}

    def check_params(self, p: Mapping[str, float], key: Callable[[str], str]) -> None:
        check_ranges(f"synapse model {self.name!r}", self.param_ranges, self.defaults, p, key)


class ConductanceJump(SynapseModel):
    """On each arriving spike the target's ``var`` jumps by the weight (Brian2 ``on_pre='ge+=we'``)."""

    kind = "event"

    def __init__(self, name: str, var: str, description: str) -> None:
        self.name, self.var, self.description = name, var, description

    def incompatibility(self, target: NeuronModel) -> str | None:
        if self.var not in target.event_vars:
            return (f"target model {target.name!r} has no variable {self.var!r} for spike-triggered input "
                    f"(its event variables: {', '.join(target.event_vars) or 'none'})")
        return None


class GradedKinetic(SynapseModel):
    """Kinetic synapse with state per source: d[O]/dt = α(1-[O])[T] - β[O].

    ``signal`` names what [T] depends on: ``"v"`` (graded release, sigmoid of V_pre) or
    ``"fire_t"`` (a transmitter pulse of height A lasting t_max after each presynaptic spike plus
    the projection delay)."""

    kind = "graded"
    default_delay_ms = 0.0

    def __init__(self, name: str, signal: str, defaults: Mapping[str, float], description: str,
                 accepts_delay: bool) -> None:
        self.name, self.signal, self.defaults, self.description = name, signal, dict(defaults), description
        self.accepts_delay = accepts_delay
        self.variables: tuple[str, ...] = ("o",)

    def incompatibility(self, target: NeuronModel) -> str | None:
        if target.conductance_unit != "mS_cm2":
            return f"graded synapses are parameterised per membrane area; target model {target.name!r} uses {target.conductance_unit}"
        return None

    def transmitter(self, ops: Any, p: Mapping[str, float], pre: Any, t: Any, delay_ms: float) -> Any:
        if self.signal == "v":
            return 1.0 / (1.0 + ops.exp(-(pre - p["V0_mV"]) * (1.0 / p["sigma_mV"])))
        since = t - pre - delay_ms
        return ops.where((since >= 0.0) & (since < p["t_max_ms"]), p["A_mM"] + 0.0 * since, 0.0 * since)

    def terms(self, ops: Any, p: Mapping[str, float], s: Mapping[str, Any], T: Any) -> Terms:
        aT = p["alpha_per_mM_ms"] * T
        return {"o": (-(aT + p["beta_per_ms"]), aT)}

    def open_fraction(self, ops: Any, p: Mapping[str, float], s: Mapping[str, Any]) -> Any:
        return s["o"]

    def initial(self) -> dict[str, float]:
        return {v: 0.0 for v in self.variables}


class GabaB(GradedKinetic):
    """Slow, G-protein coupled GABA_B (Destexhe et al. 1996 kinetics as used by Bazhenov 2001):
    dr/dt = K1[T](1-r) - K2 r; ds/dt = K3 r - K4 s; open = s⁴/(s⁴ + Kd); K⁺ reversal.
    [T] is a pulse after each presynaptic spike, as for the cholinergic synapse."""

    def __init__(self) -> None:
        super().__init__(
            "gaba_b", "fire_t",
            {"K1_per_mM_ms": 0.52, "K2_per_ms": 0.0013, "K3_per_ms": 0.098, "K4_per_ms": 0.033,
             "Kd": 100.0, "A_mM": 0.5, "t_max_ms": 0.3, "E_mV": -95.0},
            "slow GABA_B LN→PN (Bazhenov 2001), K⁺ reversal, pulse-driven", accepts_delay=True)
        self.variables = ("r", "s")

    def terms(self, ops: Any, p: Mapping[str, float], s: Mapping[str, Any], T: Any) -> Terms:
        k1T = p["K1_per_mM_ms"] * T
        return {"r": (-(k1T + p["K2_per_ms"]), k1T), "s": (-p["K4_per_ms"], p["K3_per_ms"] * s["r"])}

    def open_fraction(self, ops: Any, p: Mapping[str, float], s: Mapping[str, Any]) -> Any:
        s2 = s["s"] * s["s"]
        s4 = s2 * s2
        return s4 / (s4 + p["Kd"])


SYNAPSES: dict[str, SynapseModel] = {}
for _syn in (
    ConductanceJump("exp_cond_exc", "ge", "excitatory: target ge jumps by the weight on each spike (COBAHH)"),
    ConductanceJump("exp_cond_inh", "gi", "inhibitory: target gi jumps by the weight on each spike (COBAHH)"),
    GradedKinetic("ach_pulse", "fire_t",
                  {"alpha_per_mM_ms": 10.0, "beta_per_ms": 0.2, "E_mV": 0.0, "A_mM": 0.5, "t_max_ms": 0.3},
                  "cholinergic (nicotinic) PN→LN: transmitter pulse after each presynaptic spike (PSST)", accepts_delay=True),
    GradedKinetic("gaba_a_graded", "v",
                  {"alpha_per_mM_ms": 10.0, "beta_per_ms": 0.16, "E_mV": -70.0, "V0_mV": -20.0, "sigma_mV": 1.5},
                  "fast GABA_A LN→all: graded release on presynaptic voltage, no delay (PSST)", accepts_delay=False),
    GabaB(),
):
    SYNAPSES[_syn.name] = _syn
