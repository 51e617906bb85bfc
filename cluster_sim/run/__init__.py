"""The run layer shared by both execution modes: ``simulate`` and ``check``."""
from cluster_sim.run.check import check
from cluster_sim.run.layer import RunResult, simulate

__all__ = ["RunResult", "check", "simulate"]
