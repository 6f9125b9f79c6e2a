"""Monitor an agent framework's requests: an `AsyncOpenAI` / `OpenAI` client whose replies a `Monitor` records.

Agent frameworks (the OpenAI Agents SDK, ...) make their own requests. Hand
them a client from here and every non-streamed chat completion or Responses
reply they get is recorded as a monitor turn (with the per-token scores of
the monitor's probes and its alarm rules), without touching the framework:

    monitor = Monitor(None, rules=[AlarmRule("concession", 0.9)], record="agent.jsonl")
    client = monitored_async_openai(monitor, "http://127.0.0.1:8000/v1")
    model = OpenAIResponsesModel("default", openai_client=client)
    agent = Agent(..., model=model, model_settings=ModelSettings(extra_body=monitor.request_body()))

The framework must send the monitor's probes (`monitor.request_body()` as
extra_body); a reply without them is still recorded, with no scores.
Streamed replies pass through unrecorded: for those use `Monitor.watch`.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

MONITORED_PATHS = ("/chat/completions", "/responses")


def _conversation(request: httpx.Request) -> list[dict] | None:
    """The messages (chat) or input items (Responses) a request sent; None if it is not one to record."""
    if request.method != "POST" or not request.url.path.endswith(MONITORED_PATHS):
        return None
    try:
        body = json.loads(request.content or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if body.get("stream"):
        return None
    if "messages" in body:
        return body["messages"]
    items = body.get("input")
    messages = [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
    return messages + ([{"role": "user", "content": items}] if isinstance(items, str) else list(items or []))


def _record(monitor, request: httpx.Request, status: int, content: bytes) -> None:
    messages = _conversation(request)
    if messages is None or status != 200:
        return
    monitor.observe(json.loads(content), messages)


def monitored_async_openai(monitor, base_url: str, api_key: str = "unused-on-loopback", **kwargs: Any):
    """`openai.AsyncOpenAI` on base_url whose replies `monitor` records."""
    from openai import AsyncOpenAI

    async def on_response(response: httpx.Response) -> None:
        if _conversation(response.request) is not None:
            await response.aread()
            _record(monitor, response.request, response.status_code, response.content)

    http = httpx.AsyncClient(event_hooks={"response": [on_response]}, timeout=kwargs.pop("timeout", 600))
    return AsyncOpenAI(base_url=base_url, api_key=api_key, http_client=http, **kwargs)


def monitored_openai(monitor, base_url: str, api_key: str = "unused-on-loopback", **kwargs: Any):
    """`openai.OpenAI` on base_url whose replies `monitor` records."""
    from openai import OpenAI

    def on_response(response: httpx.Response) -> None:
        if _conversation(response.request) is not None:
            response.read()
            _record(monitor, response.request, response.status_code, response.content)

    http = httpx.Client(event_hooks={"response": [on_response]}, timeout=kwargs.pop("timeout", 600))
    return OpenAI(base_url=base_url, api_key=api_key, http_client=http, **kwargs)
