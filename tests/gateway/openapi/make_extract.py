"""Regenerate `openai-extract.json` from OpenAI's full OpenAPI description.

The tests validate responses against OpenAI's published schemas. The full
description (3.4 MB) lives outside the repository, in
`../shared/reference/openai-openapi/openapi.json` where CI lays it; a fresh
clone has only this extract: the schemas named in ROOTS and every schema they
reference, byte-for-byte the same JSON, plus where it came from.

    python tests/gateway/openapi/make_extract.py [path/to/openapi.json]

`test_openapi_extract.py` fails when the extract and the full description differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXTRACT = HERE / "openai-extract.json"
FULL_DEFAULT = HERE.parents[3] / "shared" / "reference" / "openai-openapi" / "openapi.json"

SOURCE = "openai/openai-openapi"
# The commit of the copy in shared/reference (its README names it); the full
# file does not carry it, so a regeneration from a newer copy must update this.
SOURCE_COMMIT = "f85dbe2"
LICENSE = "MIT (Copyright (c) OpenAI); the licence text is LICENSE beside this file"

# What the tests validate: /v1/chat/completions (whole and streamed),
# /v1/completions, /v1/models, errors, and the Responses API (object and stream events).
ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    "Response",
    "ResponseStreamEvent",
)
SCHEMA_REF = "#/components/schemas/"


def _refs(node, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                if not value.startswith(SCHEMA_REF):
                    raise ValueError(f"unexpected reference {value!r}")
                found.add(value[len(SCHEMA_REF) :])
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def extract(full: dict, roots=ROOTS) -> dict:
    """The extract of a parsed full description: ROOTS and their references, with provenance."""
    schemas = full["components"]["schemas"]
    keep: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        found: set[str] = set()
        _refs(schemas[name], found)
        todo.extend(found - keep)
    return {
        "source": SOURCE,
        "source_commit": SOURCE_COMMIT,
        "source_version": full["info"]["version"],
        "license": LICENSE,
        "generated_by": "tests/gateway/openapi/make_extract.py",
        "roots": list(roots),
        "components": {"schemas": {name: schemas[name] for name in sorted(keep)}},
    }


def render(doc: dict) -> str:
    """One schema a line: small diffs when OpenAI changes one schema."""
    head = {k: v for k, v in doc.items() if k != "components"}
    lines = ["{"]
    for key, value in head.items():
        lines.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},")
    lines.append('"components": {"schemas": {')
    items = list(doc["components"]["schemas"].items())
    for i, (name, schema) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"{json.dumps(name)}: {json.dumps(schema, ensure_ascii=False, sort_keys=True)}{comma}")
    lines.append("}}}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    full_path = Path(argv[0]) if argv else FULL_DEFAULT
    doc = extract(json.loads(full_path.read_text(encoding="utf-8")))
    EXTRACT.write_text(render(doc), encoding="utf-8")
    print(f"{EXTRACT}: {len(doc['components']['schemas'])} schemas from {full_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
