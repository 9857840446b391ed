"""What `docker compose config` would refuse and the Compose schema cannot see: a
service that depends on, or a named volume or secret that is used but not declared."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML


def _names(entries: Any) -> list[str]:
    """The keys of a mapping form, or the names of a list form (short or long syntax)."""
    if isinstance(entries, dict):
        return list(entries)
    return [entry if isinstance(entry, str) else entry["source"] for entry in entries or []]


def _volume_sources(entries: Any) -> list[str]:
    sources = []
    for entry in entries or []:
        source = entry.split(":", 1)[0] if isinstance(entry, str) else entry.get("source", "")
        if source and not source.startswith((".", "/", "~", "$")):  # a named volume, not a bind mount
            sources.append(source)
    return sources


def problems(compose: dict[str, Any]) -> list[str]:
    services = compose.get("services") or {}
    declared = {kind: set(compose.get(kind) or {}) for kind in ("volumes", "secrets")}
    found = []
    for name, service in services.items():
        found += [
            f"{name}: depends_on {dep!r}, no such service"
            for dep in _names(service.get("depends_on"))
            if dep not in services
        ]
        found += [
            f"{name}: volume {v!r} is not declared under volumes:"
            for v in _volume_sources(service.get("volumes"))
            if v not in declared["volumes"]
        ]
        found += [
            f"{name}: secret {s!r} is not declared under secrets:"
            for s in _names(service.get("secrets"))
            if s not in declared["secrets"]
        ]
    return found


def main(path: str) -> int:
    found = problems(YAML(typ="safe").load(Path(path)))
    for problem in found:
        print(f"{path}: {problem}", file=sys.stderr)
    if not found:
        print(f"ok -- {path}: every service, volume and secret it uses is declared")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
