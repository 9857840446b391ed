"""``commsvc schema``: writes the AsyncAPI document, or one JSON Schema per message.

The output is deterministic (fixed order, no timestamps), so ``docs/asyncapi.yaml``
can be checked against a fresh run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

import yaml

from streams.contract import catalogue
from streams.contract.document import build
from streams.contract.schemas import message_json_schema

Format = Literal["asyncapi", "jsonschema"]
FORMATS: tuple[Format, ...] = ("asyncapi", "jsonschema")
DEFAULT_DOCUMENT = Path("docs/asyncapi.yaml")


class _Dumper(yaml.SafeDumper):
    """Block YAML: multi-line text as literal blocks, and no anchors or aliases (a
    reader should see every value where it applies)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.split("\n")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def to_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def to_json(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def asyncapi_text(json_output: bool = False) -> str:
    document = build()
    return to_json(document) if json_output else to_yaml(document)


def json_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema per message, by message name (event type, or dead_letter)."""
    return {message.name: message_json_schema(message) for message in catalogue.messages()}


def run_schema(format: Format = "asyncapi", out: Path | None = None) -> int:
    """``commsvc schema [--format asyncapi|jsonschema] [--out PATH]``.

    asyncapi: the document as YAML (JSON when ``out`` ends in ``.json``), to ``out``
    or standard output. jsonschema: ``out`` is a directory that gets
    ``<message name>.json`` for each message; without it, one JSON document mapping
    the names to the schemas goes to standard output. Returns the exit status."""
    if format == "asyncapi":
        text = asyncapi_text(json_output=out is not None and out.suffix == ".json")
        if out is None:
            sys.stdout.write(text)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
            print(f"wrote the AsyncAPI document to {out}", file=sys.stderr)
        return 0
    if format == "jsonschema":
        schemas = json_schemas()
        if out is None:
            sys.stdout.write(to_json(schemas))
            return 0
        if out.exists() and not out.is_dir():
            print(
                f"commsvc schema: --out {out}: not a directory (--format jsonschema writes one file per message)",
                file=sys.stderr,
            )
            return 2
        out.mkdir(parents=True, exist_ok=True)
        for name, schema in schemas.items():
            (out / f"{name}.json").write_text(to_json(schema), encoding="utf-8")
        print(f"wrote {len(schemas)} JSON Schemas to {out}", file=sys.stderr)
        return 0
    print(f"commsvc schema: unknown format {format!r} (expected one of {', '.join(FORMATS)})", file=sys.stderr)
    return 2
