"""Offline checker for Apptainer/Singularity definition files (``cluster-sim container check``).

It needs no Apptainer: it parses the header and sections the way ``apptainer build`` does and
reports every problem at once, each with its line number.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

AGENTS = ("docker", "library", "localimage", "debootstrap", "oras", "docker-daemon", "docker-archive", "shub",
          "yum", "zypper", "busybox", "scratch")
# Agents that need From: (the others take MirrorURL/OSVersion or nothing).
NEEDS_FROM = ("docker", "library", "localimage", "oras", "docker-daemon", "docker-archive", "shub")
HEADER_KEYS = ("bootstrap", "from", "stage", "osversion", "mirrorurl", "include", "registry", "namespace",
               "fingerprints", "confurl", "updateurl", "setopt", "product", "user", "regcode", "productpgp",
               "registerurl", "otherurl0", "otherurl1", "otherurl2")
SECTIONS = ("setup", "files", "environment", "post", "runscript", "startscript", "test", "labels", "help",
            "arguments", "app", "appinstall", "appenv", "apprun", "applabels", "appfiles", "apphelp", "apptest",
            "appstart")
# Apptainer requires no section; an image without these is legal but hard to use or to trust,
# so their absence is a warning, never an error.
RECOMMENDED = ("post", "runscript", "test", "labels")
# Build-time variables ({{ NAME }}): defined in %arguments or by `apptainer build --build-arg`.
_BUILD_VAR_RE = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")
_VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Labels that must carry a version number.
VERSION_LABELS = ("org.opencontainers.image.version",)
VERSION_RE = re.compile(r"\d+\.\d+")


@dataclass
class CheckResult:
    path: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    agent: str = ""
    sections: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def report(self) -> str:
        lines = [f"{self.path}: {'OK' if self.ok else 'INVALID'}"
                 + (f" (Bootstrap: {self.agent}; sections: {', '.join(self.sections)})" if self.agent else "")]
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


_SECTION_RE = re.compile(r"^%([A-Za-z]+)\b(.*)$")


def check_text(text: str, path: Path = Path("<string>"), build_args: dict[str, str] | None = None) -> CheckResult:
    """Check a definition's text; ``build_args`` are what ``--build-arg NAME=VALUE`` would give."""
    build_args = build_args or {}
    r = CheckResult(path)
    lines = text.splitlines()
    header: dict[str, tuple[int, str]] = {}
    i = 0
    # Header: key: value lines (and comments/blank lines) before the first %section.
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("%"):
            break
        if line and not line.startswith("#"):
            m = re.match(r"^([A-Za-z][A-Za-z0-9]*)\s*:\s*(.*)$", line)
            if not m:
                r.errors.append(f"line {i + 1}: header line is not 'Key: value': {line!r}")
            else:
                key = m.group(1).lower()
                if key not in HEADER_KEYS:
                    r.errors.append(f"line {i + 1}: unknown header keyword {m.group(1)!r} "
                                    f"(known: {', '.join(k.capitalize() for k in HEADER_KEYS[:6])}, ...)")
                elif key in header and key != "bootstrap":
                    r.errors.append(f"line {i + 1}: header keyword {m.group(1)!r} given twice")
                if key == "bootstrap" and "bootstrap" in header:
                    r.warnings.append(f"line {i + 1}: second Bootstrap: a multi-stage build; only the first is checked")
                else:
                    header.setdefault(key, (i + 1, m.group(2).strip()))
        i += 1
    if "bootstrap" not in header:
        r.errors.append("line 1: missing 'Bootstrap:' header (it must come first, e.g. 'Bootstrap: docker')")
    else:
        ln, agent = header["bootstrap"]
        r.agent = agent
        first_key_line = min(n for n, _ in header.values())
        if ln != first_key_line:
            r.errors.append(f"line {ln}: 'Bootstrap:' must be the first header line")
        if agent not in AGENTS:
            r.errors.append(f"line {ln}: unknown bootstrap agent {agent!r} (known: {', '.join(AGENTS)})")
        elif agent.lower() in NEEDS_FROM and not header.get("from", (0, ""))[1]:
            r.errors.append(f"line {ln}: Bootstrap: {agent} needs a 'From:' line (e.g. From: tensorflow/tensorflow:2.16.1-gpu)")
        elif agent == "scratch" and "from" in header:
            r.warnings.append("Bootstrap: scratch ignores From:")
    # Sections.
    seen: dict[str, int] = {}
    current = ""
    body: dict[str, list[str]] = {}
    for j in range(i, len(lines)):
        raw = lines[j]
        m = _SECTION_RE.match(raw.strip()) if raw.startswith("%") else None
        if m:
            name = m.group(1).lower()
            if name not in SECTIONS:
                r.errors.append(f"line {j + 1}: unknown section %{m.group(1)} (known: %{', %'.join(SECTIONS[:10])}, ...)")
                current = ""
                continue
            key = name if not name.startswith("app") else f"{name} {m.group(2).strip()}"
            if name.startswith("app") and not m.group(2).strip():
                r.errors.append(f"line {j + 1}: %{name} needs an app name")
            if key in seen:
                r.errors.append(f"line {j + 1}: section %{name} appears twice (first on line {seen[key]})")
            seen.setdefault(key, j + 1)
            current = key
            body.setdefault(current, [])
        elif current:
            body[current].append(raw)
    r.sections = list(seen)
    for rec in RECOMMENDED:
        if rec not in seen:
            r.warnings.append(f"no %{rec} section (optional, but recommended for a cluster image)")
    for name, first in seen.items():
        if not any(ln.strip() and not ln.strip().startswith("#") for ln in body.get(name, [])):
            r.warnings.append(f"section %{name} (line {first}) is empty")
    values = {**_arguments(body.get("arguments", [])), **build_args}
    _check_build_vars(r, lines, values, body.get("arguments", []))
    # Labels: "key value" per line; versions required.
    for label_line in body.get("labels", []):
        s = label_line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split(None, 1)
        # Labels are checked as built: {{ NAME }} takes its %arguments default or --build-arg value.
        r.labels[parts[0]] = _BUILD_VAR_RE.sub(lambda m: values.get(m.group(1), m.group(0)),
                                               parts[1].strip()) if len(parts) > 1 else ""
        if len(parts) == 1:
            r.errors.append(f"%labels: label {parts[0]!r} has no value")
    if "labels" in seen:
        versioned = [k for k, val in r.labels.items() if "version" in k.lower() and VERSION_RE.search(val)]
        if not versioned:
            r.errors.append("%labels has no version label (add e.g. 'org.opencontainers.image.version 0.1.0' "
                            "and the TensorFlow/MPI/CUDA versions)")
        for k in VERSION_LABELS:
            if k in r.labels and not VERSION_RE.search(r.labels[k]):
                r.errors.append(f"%labels: {k} = {r.labels[k]!r} is not a version")
        for k, val in r.labels.items():
            if "version" in k.lower() and not VERSION_RE.search(val):
                r.errors.append(f"%labels: {k} = {val!r} does not look like a version (x.y)")
    return r


def _arguments(arguments: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in arguments:
        s = raw.strip()
        if s and not s.startswith("#"):
            name, _, default = s.partition("=")
            out[name.strip()] = default.strip()
    return out


def _check_build_vars(r: CheckResult, lines: list[str], values: dict[str, str], arguments: list[str]) -> None:
    """Every {{ NAME }} must have a default in %arguments or a --build-arg: apptainer build fails
    on an undefined one. A default nothing uses is dead weight (it reads as if it mattered)."""
    used: set[str] = set()
    for n, raw in enumerate(lines, 1):
        if raw.strip().startswith("#"):
            continue
        for m in _BUILD_VAR_RE.finditer(raw):
            name = m.group(1)
            if not _VAR_NAME_RE.match(name):
                r.errors.append(f"line {n}: build variable {{{{ {name} }}}} is not a NAME")
                continue
            used.add(name)
            if name not in values:
                r.errors.append(f"line {n}: build variable {{{{ {name} }}}} is undefined: add '{name}=<default>' "
                                f"to %arguments or pass --build-arg {name}=...")
    for name in sorted(set(_arguments(arguments)) - used):
        r.warnings.append(f"%arguments: {name} is defined but never used")


def check_file(path: Path, build_args: dict[str, str] | None = None) -> CheckResult:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        r = CheckResult(path)
        r.errors.append(f"cannot read: {e}")
        return r
    return check_text(text, path, build_args)
