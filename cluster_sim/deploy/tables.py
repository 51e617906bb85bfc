"""One reader for the TOML files of sweeps and studies, with the job spec's error messages:
every refusal names the key (``sweep file PATH: key``), the value and the fix, and an unknown
key lists the valid ones. Typed getters mark keys used; :meth:`TomlTable.finish` refuses the rest."""
from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Sequence

from cluster_sim.deploy import _validate as v
from cluster_sim.errors import ConfigError

_REQUIRED: Any = ...


class TomlTable:
    """One table of a sweep or study file."""

    def __init__(self, data: Any, where: str, table: str = "", *, file: Path | None = None) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: {table}", data, "must be a table", f"write [{table}] with key = value lines")
        self.data, self.where, self.table, self.file = data, where, table, file
        self.used: set[str] = set()

    @classmethod
    def read(cls, path: Path, what: str) -> "TomlTable":
        """Parse ``path``; ``what`` names the kind of file in messages (e.g. "sweep file")."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(what, str(path), f"cannot be read: {e.strerror or e}", "check the path") from e
        except UnicodeDecodeError as e:
            raise ConfigError(what, str(path), "is not UTF-8 text", "save it as UTF-8") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(what, str(path), f"is not valid TOML: {e}", "fix the syntax at the line shown") from e
        return cls(data, f"{what} {path}", file=path)

    def key(self, name: str) -> str:
        return f"{self.where}: {self.table}.{name}" if self.table else f"{self.where}: {name}"

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = _REQUIRED) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is _REQUIRED:
                raise ConfigError(self.key(name), None, "is required", f"add {name} = ...")
            return default
        return self.data[name]

    def string(self, name: str, default: Any = _REQUIRED, *, choices: Sequence[str] | None = None,
               fix: str = "") -> str:
        value = self.raw(name, default)
        if not isinstance(value, str):
            raise ConfigError(self.key(name), value, "must be a string", fix or f'write {name} = "..."')
        if choices is not None and value not in choices:
            raise ConfigError(self.key(name), value, f"must be one of {', '.join(map(repr, choices))}",
                              f"use one of: {', '.join(choices)}")
        return value

    def integer(self, name: str, default: Any = _REQUIRED, *, lo: int = 1, hi: int = 1_000_000) -> int:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(self.key(name), value, f"must be an integer in [{lo}, {hi}]",
                              f"write {name} = {max(lo, 1)} (no quotes, no decimals)")
        return value

    def int_list(self, name: str, default: Any = _REQUIRED, *, lo: int = 1) -> tuple[int, ...]:
        value = self.raw(name, default)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ConfigError(self.key(name), value, "must be a non-empty list of integers", f"write {name} = [1, 2, 4]")
        for x in value:
            if isinstance(x, bool) or not isinstance(x, int) or x < lo:
                raise ConfigError(self.key(name), value, f"has {x!r}, not an integer >= {lo}",
                                  f"write {name} = [1, 2, 4]")
        return tuple(value)

    def positive_number(self, name: str) -> float | None:
        """An optional number > 0 (None when absent)."""
        value = self.raw(name, None)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(self.key(name), value, "must be a positive number", f"write {name} = 1000")
        return float(value)

    def boolean(self, name: str, default: Any = _REQUIRED) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), value, "must be true or false", f"write {name} = true")
        return value

    def path(self, name: str) -> Path:
        """A file path, relative to the file this table came from."""
        value = self.string(name, fix=f'add {name} = "path/to/job.toml" (relative to this file)')
        base = self.file.parent if self.file is not None else Path.cwd()
        return (base / value).resolve()

    def sub(self, name: str) -> "TomlTable":
        """A nested table (empty when absent); finish it for its own unknown keys."""
        return TomlTable(self.raw(name, {}), self.where, f"{self.table}.{name}" if self.table else name,
                         file=self.file)

    def sets(self, name: str) -> tuple[tuple[str, str], ...]:
        """A table of spec overrides (nested tables flattened to dotted keys) as ``--set`` pairs."""
        t = self.sub(name)
        return tuple((v.set_key(self.key(f"{name}.{k}"), k), v.set_value(self.key(f"{name}.{k}"), x))
                     for k, x in flatten(t.data))

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(self.key(unknown[0]), self.data[unknown[0]], "unknown key",
                              f"valid keys in [{self.table or 'top level'}] are: {', '.join(sorted(self.used))}")


def flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", 1)]``."""
    out: list[tuple[str, Any]] = []
    for k, val in table.items():
        key = f"{prefix}.{k}" if prefix else k
        out += flatten(val, key) if isinstance(val, dict) else [(key, val)]
    return out
