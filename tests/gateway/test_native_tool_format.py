"""A model whose chat template has its own tool format (mlx-lm's json_tools family): rendered by the template, constrained in that frame."""

import json
import shutil

import jsonschema
import openai
import pytest

from gateway_helpers import ServerProcess

pytestmark = pytest.mark.server

# Qwen-style: the template lists the tools and writes calls as <tool_call> blocks (mlx-lm infers "json_tools").
TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>\n"
    "Call functions inside <tool_call></tool_call> tags.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for tc in m.tool_calls %}{% set tool_call = tc.function %}"
    "<tool_call>\n{\"name\": \"{{ tool_call.name }}\", \"arguments\": {{ tool_call.arguments | tojson }}}\n</tool_call>"
    "{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER}}]
ASK = [{"role": "user", "content": "Weather in Oslo?"}]


@pytest.fixture(scope="module")
def native_dir(tiny_model_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("native-tools") / "llama"
    shutil.copytree(tiny_model_dirs["llama"], out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config["chat_template"] = TEMPLATE
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


def test_the_template_renders_tools_and_history_calls_in_its_own_format(native_dir):
    from mlx_interp.gateway import tool_formats, tools
    from mlx_interp.gateway.validation import _chat_tokens, Context
    from mlx_interp.gateway.limits import Limits
    from mlx_interp.steering.model import load_model

    lm = load_model(str(native_dir), dtype="float32", progress=False)
    fmt = tool_formats.for_tokenizer(lm.tokenizer)
    assert isinstance(fmt, tool_formats.JsonToolsFormat) and fmt.start == "<tool_call>"
    ts = tools.parse_choice(None, tools.parse_tools(TOOLS, flat=False, max_tools=4, max_schema_chars=10_000), None, flat=False)
    history = ASK + [{"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": {"city": "Oslo"}}]},
                     {"role": "tool", "content": "snow", "tool_call_id": "c1"}]
    messages, template_tools = tools.render(history, ts, fmt)
    ctx = Context(lm.tokenizer, 320, ("default",), {}, None, None, Limits())
    text = lm.tokenizer.decode(_chat_tokens(messages, ctx, template_tools))
    assert '<tools>{"type": "function"' in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in text
    assert "You can call these functions" not in text  # not the generic rendering


@pytest.fixture(scope="module")
def native_server(native_dir):
    server = ServerProcess("--model", str(native_dir))
    yield server
    server.stop()


def test_calls_come_back_in_the_models_frame_and_as_tool_calls(native_server):
    client = openai.OpenAI(base_url=native_server.url + "/v1", api_key="unused", timeout=120, max_retries=0)
    for choice, parallel in (("required", False), ({"type": "function", "function": {"name": "get_weather"}}, True), ("required", True)):
        r = client.chat.completions.create(model="default", messages=ASK, tools=TOOLS, tool_choice=choice, parallel_tool_calls=parallel,
                                           max_tokens=400, temperature=0)
        c = r.choices[0]
        if c.finish_reason == "length":  # parallel: a random model may go on calling; then it says so
            assert parallel and choice == "required" and c.message.content.startswith("<tool_call>")
            continue
        assert c.finish_reason == "tool_calls", c
        assert len(c.message.tool_calls) == 1 or (parallel and choice == "required")
        for call in c.message.tool_calls:
            jsonschema.validate(json.loads(call.function.arguments), WEATHER)
