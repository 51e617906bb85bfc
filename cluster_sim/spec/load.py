"""Reading specs from TOML and applying ``--set key=value`` overrides. A spec never runs code:
TOML has no expressions, and override values are parsed as TOML literals."""
from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping

from cluster_sim.errors import ConfigError
from cluster_sim.spec.schema import JobSpec, build_spec


def _parse_value(text: str) -> Any:
    """A TOML literal (number, bool, string, array, inline table); bare words become strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` applied (creating tables as needed)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError("--set", item, "must look like key=value", "write e.g. --set simulation.duration_ms=100")
        key, _, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError("--set", item, "has an empty key part", "write e.g. --set integrator.dt_ms=0.02")
        node: dict[str, Any] = out
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(parts[: depth + 1]), child, "is a value, not a table", f"cannot set {key}")
            node = child
        node[parts[-1]] = _parse_value(text.strip())
    return out


def parse_spec(data: Mapping[str, Any], overrides: Iterable[str] = (), *, default_name: str = "job") -> JobSpec:
    return build_spec(apply_overrides(data, overrides), default_name=default_name)


def load_spec(path: str | Path, overrides: Iterable[str] = ()) -> JobSpec:
    """Read and validate a TOML job spec. Raises ``ConfigError`` (never starts any compute)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError("JOB", str(path), f"cannot be read ({e.strerror})", "give the path of a .toml job spec") from e
    try:
        text = raw.decode("utf-8")  # TOML is UTF-8 by definition
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError("JOB", str(path), f"is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line})",
                          "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or check it is a job spec") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), "", f"is not valid TOML: {e}", "fix the syntax at the position shown") from e
    return parse_spec(data, overrides, default_name=path.stem.replace(".", "_"))


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    """The validated input as plain JSON-able data (stored beside the results)."""
    return json.loads(json.dumps(spec.raw))
