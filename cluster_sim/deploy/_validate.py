"""Allow-lists for every value that can reach a batch script.

Values that land in ``#SBATCH`` lines are parsed by sbatch, not by bash, and sbatch does not
understand shell quoting; so those values must match a strict allow-list. Values that land in the
script body are additionally passed through :func:`shlex.quote` by the templates (``|q``).
"""
from __future__ import annotations

import re
from pathlib import Path

from cluster_sim.errors import ConfigError

# Names: job names, partitions, accounts, qos, site names, study members.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")
# Module names as Lmod/Tcl spell them: gcc/12.2.0, openmpi/4.1.5-cuda, CUDA/12.2.
MODULE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+/-]{0,127}$")
# Dotted parameter keys for --set: stimuli.odor.amplitude_uA_cm2, populations[0].n
SET_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:(?:\.[A-Za-z0-9_]+)|(?:\[[0-9]+\]))*$")
# Paths in #SBATCH lines and the script: absolute, no whitespace, no shell metacharacters.
PATH_RE = re.compile(r"^/[A-Za-z0-9_.+@,=/-]*$")
# Every sbatch --time form: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_TIME_FORMS = (
    (re.compile(r"^(\d+)$"), ("m",)),
    (re.compile(r"^(\d+):(\d{1,2})$"), ("m", "s")),
    (re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})$"), ("h", "m", "s")),
    (re.compile(r"^(\d+)-(\d{1,2})$"), ("d", "h")),
    (re.compile(r"^(\d+)-(\d{1,2}):(\d{1,2})$"), ("d", "h", "m")),
    (re.compile(r"^(\d+)-(\d{1,2}):(\d{1,2}):(\d{1,2})$"), ("d", "h", "m", "s")),
)
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# GRES / constraint strings: gpu:a100:2, "skylake&ib"
GRES_RE = re.compile(r"^[A-Za-z0-9_:.,-]{1,64}$")
CONSTRAINT_RE = re.compile(r"^[A-Za-z0-9_&|,.:\[\]*-]{1,128}$")
DEPENDENCY_RE = re.compile(r"^(?:after|afterany|afterok|afternotok|aftercorr|singleton)(?::\d+(?:_\d+)?)*"
                           r"(?:[,?](?:after|afterany|afterok|afternotok|aftercorr|singleton)(?::\d+(?:_\d+)?)*)*$")
MEM_RE = re.compile(r"^\d+[KMGT]?$")
MAIL_USER_RE = re.compile(r"^[A-Za-z0-9._%+-]+(?:@[A-Za-z0-9.-]+\.[A-Za-z]{2,})?$")
MAIL_TYPES = ("NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT", "TIME_LIMIT",
              "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def name(key: str, value: object) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ConfigError(key, value, "must be 1-100 characters of letters, digits and _ . + - "
                          "(starting with a letter or digit)", "rename it, e.g. 'cobahh-4n'")
    return value


def module(key: str, value: object) -> str:
    if not isinstance(value, str) or not MODULE_RE.match(value):
        raise ConfigError(key, value, "is not a module name (letters, digits, _ . + / -)",
                          "write it as 'module load' takes it, e.g. 'openmpi/4.1.5'")
    return value


def set_key(key: str, value: object) -> str:
    if not isinstance(value, str) or not SET_KEY_RE.match(value):
        raise ConfigError(key, value, "is not a dotted parameter key",
                          "use e.g. 'stimuli.odor.amplitude_uA_cm2'")
    return value


def set_value(key: str, value: object) -> str:
    """Render a parameter value for ``--set key=value``; rejects control characters."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ConfigError(key, value, "must be a string, number or boolean",
                          "lists and tables are not allowed as --set values")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ConfigError(key, value, "contains a newline or control character",
                          "remove it; values must be single-line text")
    if len(text) > 1000:
        raise ConfigError(key, value, "is longer than 1000 characters", "shorten it")
    return text


def parse_set(item: str, where: str = "--set") -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(where, item, "must look like key=value", "e.g. --set simulation.duration_ms=500")
    k, v = item.split("=", 1)
    return set_key(where, k.strip()), set_value(f"{where} {k.strip()}", v)


def path(key: str, value: Path | str, *, must_exist: bool = False) -> Path:
    p = Path(value).expanduser()
    p = p.resolve() if p.is_absolute() or must_exist else (Path.cwd() / p).resolve()
    if not PATH_RE.match(str(p)):
        raise ConfigError(key, str(p), "contains whitespace or characters outside A-Z a-z 0-9 _ . + @ , = / -",
                          "use a path without spaces or shell metacharacters (it is written into the batch script)")
    if must_exist and not p.exists():
        raise ConfigError(key, str(p), "does not exist", "check the path")
    return p


def _parse_time(value: str) -> int | None:
    for rx, units in _TIME_FORMS:
        m = rx.match(value)
        if m:
            return sum(int(x) * _UNIT_S[u] for x, u in zip(m.groups(), units))
    return None


def time_limit(key: str, value: object) -> str:
    """A SLURM time limit in any sbatch form (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S), returned
    unchanged (sbatch reads it); zero is refused (it would mean no time at all)."""
    secs = _parse_time(value) if isinstance(value, str) else None
    if not secs:
        raise ConfigError(key, value, "is not a SLURM time limit",
                          "write minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. 02:00:00 or 1-12")
    return str(value)


def time_seconds(value: str) -> int:
    secs = _parse_time(value)
    assert secs is not None  # validated by time_limit
    return secs


def positive_int(key: str, value: object, *, minimum: int = 1, maximum: int = 1_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConfigError(key, value, f"must be an integer in [{minimum}, {maximum}]",
                          f"give a whole number from {minimum} to {maximum}, e.g. {max(minimum, 1)}")
    return value


def regex(key: str, value: object, rx: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not rx.match(value):
        raise ConfigError(key, value, f"is not a valid {what}", f"must match {rx.pattern}")
    return value
