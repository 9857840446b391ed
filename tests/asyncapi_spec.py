"""The AsyncAPI 3.0.0 specification's JSON Schema (vendored in tests/specs/), as a
validator of whole documents."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

SPEC = Path(__file__).parent / "specs" / "asyncapi-3.0.0.json"


@cache
def asyncapi_validator() -> Draft7Validator:
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    # The bundle keeps every sub-schema under ``definitions`` by its own $id, and
    # refers to them by that URL: register each, so that nothing is fetched.
    resources = [(spec["$id"], Resource.from_contents(spec, default_specification=DRAFT7))]
    resources += [
        (uri, Resource.from_contents(schema, default_specification=DRAFT7))
        for uri, schema in spec["definitions"].items()
    ]
    return Draft7Validator(spec, registry=Registry().with_resources(resources))


def asyncapi_errors(document: Any) -> list[str]:
    errors = sorted(asyncapi_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message[:300]}" for error in errors]
