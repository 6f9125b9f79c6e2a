"""Request bodies -> GenerationSpec: every field checked, every message naming the field, limit and value."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import BadRequest, NotFound
from .limits import Limits
from .presets import Preset
from .protocol import CHAT, TEXT, ChoiceSpec, GenerationSpec
from . import guard_spec, probe_spec, response_format, steer_spec, tool_formats, tools
from .sampling import SamplingParams

if TYPE_CHECKING:
    from mlx_interp.probes.probe import Probe
    from mlx_interp.steering.vectors import SteeringVector

    from .catalog import Shelf

ROLES = {"system", "developer", "user", "assistant", "tool"}
# functions / function_call are the deprecated forms of tools / tool_choice: use those.
UNSUPPORTED = ("functions", "function_call", "suffix", "audio", "prediction")
SEED_RANGE = (-(2**63), 2**64 - 1)
_TOKEN_ID = re.compile(r"[0-9]{1,10}")


@dataclass
class Context:
    """What validation needs from the server: the model's facts, the libraries and the limits."""

    tokenizer: Any  # the model's tokenizer (mlx-lm's TokenizerWrapper, or any with encode/apply_chat_template)
    vocab_size: int
    model_ids: tuple[str, ...]  # ids that name the base model ("default", the real id)
    presets: dict[str, Preset]
    vectors: Shelf[SteeringVector]
    probes: Shelf[Probe]
    limits: Limits


def _type_error(name: str, expected: str, value) -> BadRequest:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return BadRequest(f"{name} must be {expected}, got {shown}", param=name)


def _get_number(body: dict, name: str, default, lo: float, hi: float, *, integer=False, lo_open=False):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise _type_error(name, "an integer" if integer else "a number", value)
    if isinstance(value, float) and not math.isfinite(value):
        raise _type_error(name, "a finite number", value)
    if value < lo or value > hi or (lo_open and value == lo):
        bound = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
        raise BadRequest(f"{name} must be in {bound}, got {value!r}", param=name)
    return value


def _get_bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _type_error(name, "true or false", value)
    return value


def resolve_model(body: dict, ctx: Context) -> tuple[str, Preset | None]:
    model = body.get("model")
    if model is None:
        raise BadRequest("model is required (use \"default\" or GET /v1/models for the ids)", param="model")
    if not isinstance(model, str):
        raise _type_error("model", "a string", model)
    if model in ctx.model_ids:
        return model, None
    if model in ctx.presets:
        return model, ctx.presets[model]
    raise NotFound(
        f"model {model[:80]!r} is not served here; available: {', '.join(list(ctx.model_ids) + sorted(ctx.presets))}",
        param="model",
        code="model_not_found",
    )


def _messages(body: dict, ctx: Context) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _type_error("messages", "a non-empty list of {role, content} objects", messages)
    out = []
    call_ids: set = set()  # ids of the tool calls so far: a tool message must answer one
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise BadRequest(f"{where} must be an object with role and content", param="messages")
        role = m.get("role")
        if role not in ROLES:
            raise BadRequest(f"{where}.role must be one of {', '.join(sorted(ROLES))}, got {role!r}", param="messages")
        content = m.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise BadRequest(f"{where}.content[{j}] must be {{\"type\": \"text\", \"text\": ...}}; only text is supported", param="messages")
                parts.append(part["text"])
            content = "".join(parts)
        elif not isinstance(content, str):
            raise BadRequest(f"{where}.content must be a string or a list of text parts", param="messages")
        entry = {"role": "system" if role == "developer" else role, "content": content}
        if role == "assistant":
            calls = tools.history_calls(m, where, call_ids)
            if calls:
                entry["tool_calls"] = calls
        elif role == "tool":
            entry["tool_call_id"] = tools.check_tool_message(m, where, call_ids)
        out.append(entry)
    return out


def _chat_tokens(messages: list[dict], ctx: Context, template_tools: list | None = None) -> list[int]:
    from mlx_interp.steering.chat_template import render_chat  # the rendering capture and training use too

    try:
        return render_chat(ctx.tokenizer, messages, tools=template_tools)
    except Exception as exc:  # jinja templates raise their own errors for role orders they refuse
        raise BadRequest(f"messages do not fit the model's chat template: {str(exc)[:200]}", param="messages") from None


def _prompts(body: dict, ctx: Context) -> tuple[list[list[int]], list[str]]:
    prompt = body.get("prompt")
    tok = ctx.tokenizer

    def ids_of(value, where) -> list[int]:
        if not value:
            raise BadRequest(f"{where} is empty; give at least one token", param="prompt")
        for t in value:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < ctx.vocab_size:
                raise BadRequest(f"{where} holds token {t!r}, outside the vocabulary [0, {ctx.vocab_size})", param="prompt")
        return list(value)

    if isinstance(prompt, str):
        items = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(x, int) and not isinstance(x, bool) for x in prompt):
        items = [prompt]
    elif isinstance(prompt, list) and prompt:
        items = prompt
    else:
        raise _type_error("prompt", "a string, a list of strings, a list of token ids or a list of such lists", prompt)
    if len(items) > ctx.limits.max_prompts:
        raise BadRequest(f"prompt holds {len(items)} prompts; the limit is {ctx.limits.max_prompts} (--max-prompts)", param="prompt")
    tokens, texts = [], []
    for i, item in enumerate(items):
        where = "prompt" if len(items) == 1 else f"prompt[{i}]"
        if isinstance(item, str):
            ids = list(tok.encode(item))
            if not ids:
                raise BadRequest(f"{where} is empty; give some text", param="prompt")
            tokens.append(ids)
            texts.append(item)
        elif isinstance(item, list):
            tokens.append(ids_of(item, where))
            texts.append(tok.decode(item))
        else:
            raise _type_error(where, "a string or a list of token ids", item)
    return tokens, texts


def _stop(body: dict, limits: Limits) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _type_error("stop", "a string or a list of strings", stop)
    if len(stops) > limits.max_stop:
        raise BadRequest(f"stop has {len(stops)} strings; the limit is {limits.max_stop} (--max-stop)", param="stop")
    for s in stops:
        if not s:
            raise BadRequest("stop strings must not be empty", param="stop")
        if len(s) > limits.max_stop_chars:
            raise BadRequest(f"a stop string is {len(s)} characters; the limit is {limits.max_stop_chars} (--max-stop-chars)", param="stop")
    return tuple(stops)


def _logit_bias(body: dict, ctx: Context) -> tuple[tuple[int, float], ...]:
    bias = body.get("logit_bias")
    if bias is None:
        return ()
    if not isinstance(bias, dict):
        raise _type_error("logit_bias", "an object mapping token ids to numbers in [-100, 100]", bias)
    if len(bias) > ctx.limits.max_logit_bias:
        raise BadRequest(f"logit_bias has {len(bias)} entries; the limit is {ctx.limits.max_logit_bias} (--max-logit-bias)", param="logit_bias")
    out = []
    for key, value in bias.items():
        if not _TOKEN_ID.fullmatch(key):  # int() would also take " 5 ", "1_0" and "+5"
            raise BadRequest(f"logit_bias key {key[:40]!r} is not a token id (decimal digits only)", param="logit_bias")
        tid = int(key)
        if not 0 <= tid < ctx.vocab_size:
            raise BadRequest(f"logit_bias token {tid} is outside the vocabulary [0, {ctx.vocab_size})", param="logit_bias")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise BadRequest(f"logit_bias[{key}] must be a number in [-100, 100], got {value!r}", param="logit_bias")
        out.append((tid, float(value)))
    return tuple(out)


def _single_header(headers, name: str) -> str | None:
    """A steering header given twice is refused, not half-read."""
    values = headers.getlist(name) if hasattr(headers, "getlist") else [v for v in [headers.get(name)] if v is not None]
    if len(values) > 1:
        raise BadRequest(f"{name} header was sent {len(values)} times; send it once, entries separated by commas", param=name)
    return values[0] if values else None


def _logprobs(body: dict, kind: str, limits: Limits) -> tuple[bool, int]:
    if kind == CHAT:
        want = _get_bool(body, "logprobs", False)
        top = _get_number(body, "top_logprobs", 0, 0, limits.max_top_logprobs, integer=True)
        if top and not want:
            raise BadRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        return want, top
    value = body.get("logprobs")
    if value is None:
        return False, 0
    top = _get_number(body, "logprobs", 0, 0, limits.max_top_logprobs, integer=True)
    return True, top


def _check_budget(prompts: list[list[int]], n: int, max_tokens: int, limits: Limits) -> None:
    """The most tokens one request can make the server process: each row reads its prompt and writes max_tokens."""
    budget = n * sum(len(p) + max_tokens for p in prompts)
    if budget > limits.max_request_tokens:
        raise BadRequest(
            f"this request could take {budget} tokens of work ({len(prompts)} prompt(s) x n {n} x "
            f"(prompt tokens + max_tokens {max_tokens})); the limit is {limits.max_request_tokens} "
            "(--max-request-tokens): lower max_tokens, n or the number of prompts",
            param="max_tokens",
            code="request_too_large",
        )


def parse_request(body: dict, headers, kind: str, ctx: Context) -> GenerationSpec:
    limits = ctx.limits
    model, preset = resolve_model(body, ctx)
    for name in UNSUPPORTED:
        if body.get(name) not in (None, [], {}):
            raise BadRequest(f"{name} is not supported by this server", param=name)
    answer = response_format.parse_chat(body.get("response_format"), limits.max_schema_chars)
    toolset = tools.parse_choice(
        body.get("tool_choice"),
        tools.parse_tools(body.get("tools"), flat=False, max_tools=limits.max_tools, max_schema_chars=limits.max_schema_chars),
        body.get("parallel_tool_calls"),
        flat=False,
    )
    tool_format = tool_formats.for_tokenizer(ctx.tokenizer)
    if toolset.tools and kind != CHAT:
        raise BadRequest("tools are only supported on /v1/chat/completions and /v1/responses", param="tools")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _type_error("user", "a string", user)

    n = _get_number(body, "n", 1, 1, limits.max_n, integer=True)
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        raise BadRequest("best_of is not supported (leave it out or equal to n)", param="best_of")
    stream = _get_bool(body, "stream", False)
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise _type_error("stream_options", "an object", options)
        if not stream:
            raise BadRequest("stream_options is only allowed with stream: true", param="stream_options")
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise _type_error("stream_options.include_usage", "true or false", include_usage)

    min_tokens = 1 if kind == CHAT else 0
    names = ("max_completion_tokens", "max_tokens") if kind == CHAT else ("max_tokens",)
    max_tokens = limits.default_max_tokens
    for name in names:
        if body.get(name) is not None:
            max_tokens = _get_number(body, name, None, min_tokens, limits.max_tokens, integer=True)
            break
    echo = False
    if kind == TEXT:
        echo = _get_bool(body, "echo", False)
    logprobs, top_logprobs = _logprobs(body, kind, limits)

    sampling = SamplingParams(
        temperature=float(_get_number(body, "temperature", 1.0, 0.0, 2.0)),
        top_p=float(_get_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True)),
        top_k=max(0, int(_get_number(body, "top_k", 0, -1, ctx.vocab_size, integer=True))),  # -1 or 0: off
        min_p=float(_get_number(body, "min_p", 0.0, 0.0, 1.0)),
        seed=_get_number(body, "seed", None, *SEED_RANGE, integer=True),
        presence_penalty=float(_get_number(body, "presence_penalty", 0.0, -2.0, 2.0)),
        frequency_penalty=float(_get_number(body, "frequency_penalty", 0.0, -2.0, 2.0)),
        logit_bias=_logit_bias(body, ctx),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )
    stop = _stop(body, limits)

    if kind == CHAT:
        rendered, template_tools = tools.render(_messages(body, ctx), toolset, tool_format)
        prompts, texts = [_chat_tokens(rendered, ctx, template_tools)], [""]
    else:
        prompts, texts = _prompts(body, ctx)
    for i, p in enumerate(prompts):
        if len(p) > limits.max_prompt_tokens:
            where = "messages" if kind == CHAT else "prompt"
            raise BadRequest(f"{where} is {len(p)} tokens; the limit is {limits.max_prompt_tokens} (--max-prompt-tokens)", param=where)
    _check_budget(prompts, n, max_tokens, limits)

    entries = []
    if preset is not None:
        entries += steer_spec.parse_body(preset.steer, n, limits)
    entries += steer_spec.parse_body(body.get("steer"), n, limits)
    entries += steer_spec.parse_header(_single_header(headers, "X-Steer"), limits)
    plan = steer_spec.build_plan(entries, n, ctx.vectors, limits)

    probe_requests = probe_spec.parse(body.get("probes"), _single_header(headers, "X-Probes"), ctx.probes, limits)
    if preset is not None and preset.probes is not None:
        extra = probe_spec.parse(preset.probes, None, ctx.probes, limits)
        have = {r.name for r in probe_requests}
        probe_requests = tuple(r for r in extra if r.name not in have) + probe_requests

    guards = guard_spec.parse(body.get("guard"), preset.guard if preset is not None else None, n, ctx.probes, ctx.vectors, limits)
    requested = {r.name for r in probe_requests}
    guard_probes = tuple({r.probe_name: probe_spec.ProbeRequest(r.probe) for g in guards for r in g if r.probe_name not in requested}.values())

    choices = []
    for p_index, tokens in enumerate(prompts):
        for i in range(n):
            choices.append(ChoiceSpec(index=p_index * n + i, prompt=tuple(tokens), interventions=plan.per_choice[i], guard=guards[i]))
    if max_tokens == 0 and stream:
        raise BadRequest("max_tokens 0 (scoring only) cannot be streamed", param="max_tokens")
    return GenerationSpec(
        kind=kind,
        model=model,
        choices=choices,
        max_tokens=max_tokens,
        sampling=sampling,
        stop=stop,
        probes=probe_requests,
        stream=stream,
        include_usage=include_usage,
        echo=echo,
        prompt_texts=[texts[c.index // n] for c in choices],
        steering_applied=plan.applied,
        grammar=tools.grammar(toolset, answer, tool_format),
        output=tools.ToolOutput(toolset, tool_format) if toolset.active else None,
        guard_probes=guard_probes,
    )
