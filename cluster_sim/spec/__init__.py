"""Job specs: TOML in, frozen validated dataclasses out. Nothing here touches TensorFlow,
MPI or the disk beyond reading the spec file."""
from cluster_sim.spec.schema import (
    ConnectRule,
    EngineSpec,
    IntegratorSpec,
    JobSpec,
    OutputSpec,
    PopulationSpec,
    ProjectionSpec,
    RecordingSpec,
    SimulationSpec,
    StimulusSpec,
)
from cluster_sim.spec.load import apply_overrides, load_spec, parse_spec, spec_to_dict

__all__ = [
    "ConnectRule", "EngineSpec", "IntegratorSpec", "JobSpec", "OutputSpec", "PopulationSpec",
    "ProjectionSpec", "RecordingSpec", "SimulationSpec", "StimulusSpec",
    "apply_overrides", "load_spec", "parse_spec", "spec_to_dict",
]
