"""Is a new AsyncAPI document of the service compatible with the published one?

Consumers of a published message (output events, dead letters) rely on every field
it had and on its type; producers of a consumed message (input events, commands)
rely on everything that was accepted being accepted still. So a change is breaking
when it
- removes a message, or moves it to another topic;
- of a published message: removes a field, changes its type to one a consumer does
  not expect, or makes a field that was always there optional;
- of a consumed message: removes a field, narrows its type or its allowed values,
  or requires a field that was optional or new (inside an object that was there).

Anything else (a new message, a new optional field, a new field in a published
message, a wider input type, a new value of a published enumeration) is additive and
keeps ``schema_version``. Run as ``python -m streams.contract.compat OLD NEW``: it
prints the breaking changes and exits 1 when there are any.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ANY = "any"


@dataclass(frozen=True)
class Field:
    types: frozenset[str]  # JSON types, a string with a format as "string(date-time)"
    required: bool
    values: frozenset[Any] | None  # the allowed values, when they are listed


@dataclass(frozen=True)
class Break:
    message: str
    path: str  # "" for the message as a whole
    what: str

    def __str__(self) -> str:
        where = f"{self.message}: {self.path}" if self.path else self.message
        return f"{where}: {self.what}"


@dataclass(frozen=True)
class _Message:
    published: bool
    topic: str | None
    fields: dict[str, Field]


def load(text: str) -> dict[str, Any]:
    """A document from its YAML (or JSON) text."""
    document = yaml.safe_load(text)
    if not isinstance(document, dict):
        raise ValueError("not an AsyncAPI document (expected a mapping at the top)")
    return document


def _pointer(document: Mapping[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise ValueError(f"only local references are supported, not {ref}")
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


class _Schemas:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    def resolve(self, node: Any, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], tuple[str, ...]]:
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if ref in seen:
                return {}, seen  # a recursive schema: its inside was looked at already
            seen = (*seen, ref)
            node = _pointer(self.document, ref)
        return (node if isinstance(node, dict) else {}), seen

    def branches(self, node: Any, seen: tuple[str, ...]) -> Iterator[tuple[dict[str, Any], tuple[str, ...]]]:
        """The alternatives a value may take (anyOf/oneOf), the parts of allOf merged."""
        node, seen = self.resolve(node, seen)
        choices = node.get("anyOf") or node.get("oneOf")
        if choices:
            for choice in choices:
                yield from self.branches(choice, seen)
            return
        for part in node.get("allOf", ()):
            resolved, _ = self.resolve(part, seen)
            merged = {**resolved, **{k: v for k, v in node.items() if k != "allOf"}}
            merged["properties"] = {**resolved.get("properties", {}), **node.get("properties", {})}
            merged["required"] = [*resolved.get("required", ()), *node.get("required", ())]
            node = merged
        yield node, seen

    def fields(self, node: Any, prefix: str = "", seen: tuple[str, ...] = ()) -> dict[str, Field]:
        """Every field below ``node`` by its path, with its type and requiredness."""
        found: dict[str, Field] = {}
        properties: dict[str, list[tuple[Any, tuple[str, ...]]]] = {}
        required_everywhere: set[str] | None = None
        items: list[tuple[Any, tuple[str, ...]]] = []
        for branch, where in self.branches(node, seen):
            if "properties" in branch or branch.get("type") == "object":
                required = set(branch.get("required", ()))
                required_everywhere = required if required_everywhere is None else required_everywhere & required
                for name, child in branch.get("properties", {}).items():
                    properties.setdefault(name, []).append((child, where))
            if "items" in branch:
                items.append((branch["items"], where))
        for name, children in properties.items():
            path = f"{prefix}.{name}" if prefix else name
            types: set[str] = set()
            values: set[Any] | None = set()
            for child, where in children:
                child_types, child_values = self.shape(child, where)
                types |= child_types
                values = None if values is None or child_values is None else values | child_values
            found[path] = Field(
                frozenset(types), name in (required_everywhere or set()), None if values is None else frozenset(values)
            )
            for child, where in children:
                found.update(self.fields(child, path, where))
        for child, where in items:
            path = f"{prefix}[]"
            child_types, child_values = self.shape(child, where)
            found[path] = Field(frozenset(child_types), True, child_values)
            found.update(self.fields(child, path, where))
        return found

    def shape(self, node: Any, seen: tuple[str, ...]) -> tuple[set[str], frozenset[Any] | None]:
        types: set[str] = set()
        values: set[Any] | None = set()
        for branch, _ in self.branches(node, seen):
            listed: list[Any] | None = None
            if "const" in branch:
                listed = [branch["const"]]
            elif "enum" in branch:
                listed = list(branch["enum"])
            elif branch.get("type") == "null":
                listed = [None]
            values = None if values is None or listed is None else values | {_hashable(v) for v in listed}
            kind = branch.get("type")
            kinds = [kind] if isinstance(kind, str) else list(kind or ())
            if not kinds and listed is not None:
                kinds = sorted({_json_type(v) for v in listed})
            if not kinds:
                kinds = ["object"] if "properties" in branch else [ANY]
            for each in kinds:
                fmt = branch.get("format")
                types.add(f"{each}({fmt})" if fmt and each == "string" else each)
        return types, None if values is None else frozenset(values)


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, dict | list) else value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _covered(kind: str, by: frozenset[str]) -> bool:
    """Is every value of type ``kind`` also one of the types ``by``?"""
    if ANY in by or kind in by:
        return True
    if kind.startswith("string(") and "string" in by:
        return True
    return kind == "integer" and "number" in by


def _all_covered(kinds: frozenset[str], by: frozenset[str]) -> bool:
    return all(_covered(kind, by) for kind in kinds)


def _types(field: Field) -> str:
    return " | ".join(sorted(field.types))


def messages(document: Mapping[str, Any]) -> dict[str, _Message]:
    """Every message of the document, by name, as published or consumed by the
    service (the action of the operations that carry it)."""
    schemas = _Schemas(document)
    channels = document.get("channels", {}) or {}
    direction: dict[str, tuple[bool, str | None]] = {}
    for operation in (document.get("operations", {}) or {}).values():
        channel_ref = operation.get("channel", {}).get("$ref", "")
        channel = _pointer(document, channel_ref) if channel_ref else {}
        for ref in operation.get("messages", ()):
            message = _pointer(document, ref["$ref"])
            target = message.get("$ref", ref["$ref"])
            name = target.rsplit("/", 1)[-1]
            direction[name] = (operation.get("action") == "send", channel.get("address"))
    found: dict[str, _Message] = {}
    for name, message in ((document.get("components", {}) or {}).get("messages", {}) or {}).items():
        if name not in direction:
            for channel in channels.values():
                if name in (channel.get("messages") or {}):
                    direction[name] = (False, channel.get("address"))
        published, topic = direction.get(name, (False, None))
        found[name] = _Message(published, topic, schemas.fields(message.get("payload", {})))
    return found


def breaking_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Break]:
    """What ``new`` breaks of what ``old`` promised; empty when it is compatible."""
    before, after = messages(old), messages(new)
    found: list[Break] = []
    for name, was in sorted(before.items()):
        now = after.get(name)
        if now is None:
            found.append(Break(name, "", "the message was removed"))
            continue
        if was.topic != now.topic:
            found.append(Break(name, "", f"moved from topic {was.topic} to {now.topic}"))
        check = _published if was.published else _consumed
        found.extend(check(name, was.fields, now.fields))
    return found


def _parent(path: str) -> str:
    if path.endswith("[]"):
        return path[:-2]
    return path.rsplit(".", 1)[0] if "." in path else ""


def _published(name: str, old: dict[str, Field], new: dict[str, Field]) -> Iterator[Break]:
    for path, was in old.items():
        now = new.get(path)
        if now is None:
            if _parent(path) == "" or _parent(path) in new:  # report the topmost field removed only
                yield Break(name, path, "removed from a published message")
            continue
        if not _all_covered(now.types, was.types):
            yield Break(name, path, f"retyped from {_types(was)} to {_types(now)}")
        if was.required and not now.required:
            yield Break(name, path, "no longer always present")


def _consumed(name: str, old: dict[str, Field], new: dict[str, Field]) -> Iterator[Break]:
    for path, was in old.items():
        now = new.get(path)
        if now is None:
            if _parent(path) == "" or _parent(path) in new:
                yield Break(name, path, "removed from an accepted input")
            continue
        if not _all_covered(was.types, now.types):
            yield Break(name, path, f"retyped from {_types(was)} to {_types(now)}")
        elif now.values is not None and was.values is None:
            yield Break(name, path, f"now accepts only {', '.join(sorted(map(str, now.values)))}")
        elif now.values is not None and was.values is not None and not was.values <= now.values:
            yield Break(name, path, f"no longer accepts {', '.join(sorted(map(str, was.values - now.values)))}")
    for path, now in new.items():
        parent = _parent(path)
        if not now.required or path.endswith("[]") or (parent and parent not in old):
            continue
        before = old.get(path)
        if before is None:
            yield Break(name, path, "a new required field of an input")
        elif not before.required:
            yield Break(name, path, "made required (it was optional)")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m streams.contract.compat OLD.yaml NEW.yaml", file=sys.stderr)
        return 2
    old, new = (load(Path(arg).read_text(encoding="utf-8")) for arg in args)
    changes = breaking_changes(old, new)
    for change in changes:
        print(change)
    if changes:
        print(
            f"{len(changes)} breaking change(s): keep the published fields and types, or publish the change as "
            "a new major version on a new topic or event type",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
