"""Validate every variant of a job spec a submission will run, in this process, before sbatch.

A sweep task or study member is the spec plus its own ``--set`` values, mode and rank count; each
one is checked the way ``cluster-sim run`` would check it on the compute node (the spec, then
``cluster_sim.run.check`` for its mode and rank count), so a bad variant
costs exit 2 at submit instead of a failed array task hours later. No TensorFlow is imported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cluster_sim.errors import ConfigError


@dataclass(frozen=True)
class Variant:
    """One schedulable unit's view of the spec: ``label`` names it in error messages."""

    label: str
    sets: tuple[tuple[str, str], ...] = ()
    duration_ms: float | None = None
    mode: str = ""
    ranks: int = 1


def _overrides(v: Variant) -> list[str]:
    out = [f"{k}={val}" for k, val in v.sets]
    if v.duration_ms is not None:
        out.append(f"simulation.duration_ms={float(v.duration_ms)!r}")
    if v.mode:
        out.append(f'simulation.mode="{v.mode}"')
    return out


def check_variant(spec_path: Path, v: Variant) -> None:
    """Raise the ConfigError ``cluster-sim run`` would raise for this variant, naming it."""
    from cluster_sim.spec import load_spec

    try:
        from cluster_sim.run.check import check

        check(load_spec(spec_path, _overrides(v)), v.ranks)  # the refusals `run` makes, in one place
    except ConfigError as e:
        raise ConfigError(f"{v.label}: {e.key}", e.value, e.problem,
                          e.fix or "fix the spec or this unit's --set values") from e


def check_all(spec_path: Path, variants: Sequence[Variant]) -> None:
    """Check each distinct variant (identical ones once); the first bad one raises."""
    seen: set[tuple[object, ...]] = set()
    for v in variants:
        key = (v.sets, v.duration_ms, v.mode, v.ranks)
        if key not in seen:
            seen.add(key)
            check_variant(spec_path, v)
