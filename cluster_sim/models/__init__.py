"""Neuron models, synapse models and stimulus waveforms, by name.

A new neuron model is one module in this package defining a ``NeuronModel`` subclass with a
``name``: it is found by scanning the package, so neither this file nor the engine changes.
Synapse models and waveforms register in ``SYNAPSES`` / ``WAVEFORMS`` of their modules.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil

from cluster_sim.models.base import Drive, NeuronModel, Waveform
from cluster_sim.models.stimuli import WAVEFORMS
from cluster_sim.models.synapses import SYNAPSES, GradedKinetic, SynapseModel


def _discover() -> dict[str, NeuronModel]:
    found: dict[str, NeuronModel] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in ("base", "synapses", "stimuli"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, NeuronModel) and cls is not NeuronModel and cls.name and cls.__module__ == module.__name__:
                if cls.name in found:
                    raise RuntimeError(f"two neuron models named {cls.name!r}: {found[cls.name]} and {cls}")
                found[cls.name] = cls()
    return found


NEURONS: dict[str, NeuronModel] = _discover()


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
