"""Neuron models, synapse models and stimulus waveforms, by name. A new model is one module
with a ``NeuronModel`` subclass, registered here; the engine does not change."""
from __future__ import annotations

from cluster_sim.models.base import Drive, NeuronModel, Waveform
from cluster_sim.models.cobahh import CobaHH
from cluster_sim.models.hh_squid import HHSquid
from cluster_sim.models.locust_al import LocustLN, LocustPN
from cluster_sim.models.passive import Passive
from cluster_sim.models.stimuli import WAVEFORMS
from cluster_sim.models.synapses import SYNAPSES, GradedKinetic, SynapseModel

NEURONS: dict[str, NeuronModel] = {m.name: m for m in (CobaHH(), HHSquid(), LocustPN(), LocustLN(), Passive())}


def get_neuron_model(name: str) -> NeuronModel:
    return NEURONS[name]


def get_synapse_model(name: str) -> SynapseModel:
    return SYNAPSES[name]


def get_waveform(name: str) -> Waveform:
    return WAVEFORMS[name]


def neuron_model_names() -> list[str]:
    return sorted(NEURONS)


def synapse_model_names() -> list[str]:
    return sorted(SYNAPSES)


def waveform_names() -> list[str]:
    return sorted(WAVEFORMS)


__all__ = ["Drive", "GradedKinetic", "NeuronModel", "SynapseModel", "Waveform", "get_neuron_model",
           "get_synapse_model", "get_waveform", "neuron_model_names", "synapse_model_names", "waveform_names"]
