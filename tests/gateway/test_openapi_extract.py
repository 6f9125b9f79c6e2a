"""The OpenAI schema extract kept in tests/ is the full published description's, and it validates on its own."""

from __future__ import annotations

import importlib.util
import json
import os

import jsonschema
import pytest

from gateway_helpers import OPENAPI_EXTRACT, OPENAPI_FULL, validate

_spec = importlib.util.spec_from_file_location("make_extract", OPENAPI_EXTRACT.parent / "make_extract.py")
make_extract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_extract)


def _extract() -> dict:
    return json.loads(OPENAPI_EXTRACT.read_text(encoding="utf-8"))


@pytest.mark.skipif(
    not OPENAPI_FULL.is_file() and not os.environ.get("CI"),
    reason=f"the full description is not beside this checkout ({OPENAPI_FULL}); CI has it",
)
def test_extract_matches_the_full_description():
    # In CI a missing full description is a failure, not a skip: CI is where this check must run.
    full = json.loads(OPENAPI_FULL.read_text(encoding="utf-8"))
    regenerated = make_extract.extract(full)
    assert _extract() == regenerated, "stale extract: run python tests/gateway/openapi/make_extract.py"
    assert make_extract.render(regenerated) == OPENAPI_EXTRACT.read_text(encoding="utf-8")


def test_extract_is_closed_under_references_and_names_its_source():
    doc = _extract()
    schemas = doc["components"]["schemas"]
    found: set[str] = set()
    make_extract._refs(schemas, found)
    assert found <= set(schemas), sorted(found - set(schemas))
    assert set(doc["roots"]) <= set(schemas)
    assert doc["source"] == "openai/openai-openapi" and doc["source_commit"] and doc["source_version"]
    assert (OPENAPI_EXTRACT.parent / "LICENSE").read_text().startswith("The MIT License")


CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "default",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "refusal": None}, "finish_reason": "stop", "logprobs": None}],
}


def test_extract_accepts_a_valid_completion_and_rejects_broken_ones():
    validate(CHAT, "CreateChatCompletionResponse", source=OPENAPI_EXTRACT)
    with pytest.raises(jsonschema.ValidationError):
        validate({k: v for k, v in CHAT.items() if k != "choices"}, "CreateChatCompletionResponse", source=OPENAPI_EXTRACT)
    with pytest.raises(jsonschema.ValidationError):
        validate({**CHAT, "choices": [{**CHAT["choices"][0], "finish_reason": "done"}]}, "CreateChatCompletionResponse", source=OPENAPI_EXTRACT)
    validate({"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}}, "ErrorResponse", source=OPENAPI_EXTRACT)
    with pytest.raises(jsonschema.ValidationError):
        validate({"error": {"type": "invalid_request_error"}}, "ErrorResponse", source=OPENAPI_EXTRACT)


def test_unknown_schema_names_the_way_to_add_it():
    with pytest.raises(KeyError, match="make_extract.py"):
        validate({}, "CreateEmbeddingResponse", source=OPENAPI_EXTRACT)
