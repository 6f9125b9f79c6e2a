"""A tool-using agent (OpenAI Agents SDK) on mlx-interp, with every model turn probed and recorded.

    pip install 'mlx-interp[agents]'
    mlx-interp serve &
    python -m mlx_interp.clients.examples.agent_tools [--api chat|responses] [--probe concession]

The agent has one function tool, get_weather. The first turn must call it
(tool_choice "required"; the SDK then returns to "auto"), the tool's result
goes back, and the model answers; a second question continues the
conversation. The server constrains the call to the tool's JSON schema, so
even the 135M default model calls it with valid arguments. A `Monitor`
records the probe's per-token readings of every model turn (and fires its
rule when the probe stays above the threshold), through
`clients.harness.monitored_async_openai`; the SDK itself is unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from typing import Literal

from mlx_interp.clients.harness import monitored_async_openai
from mlx_interp.clients.monitor import AlarmRule, Monitor

QUESTIONS = ("What is the weather in Paris?", "And what should I wear there?")
WEATHER = {"paris": "sunny, 21 C", "rome": "cloudy, 18 C"}


@dataclass
class AgentRun:
    calls: list[dict] = field(default_factory=list)  # the arguments each tool call received
    answers: list[str] = field(default_factory=list)  # the agent's final answer per question
    items: list = field(default_factory=list)  # the SDK's conversation items, last run


def weather_tool(run: AgentRun):
    """The agent's function tool; each call's arguments land in run.calls."""
    from agents import function_tool

    @function_tool
    def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
        """Current weather in a city.

        Args:
            city: the city's name
            unit: the temperature unit
        """
        run.calls.append({"city": city, "unit": unit})
        return WEATHER.get(city.strip().lower(), "windy, 12 C")

    return get_weather


def build_agent(api: str, client, run: AgentRun, extra_body: dict, max_tokens: int):
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel

    model_class = OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel
    return Agent(
        name="weather",
        instructions="You answer questions about the weather. Use the get_weather tool.",
        tools=[weather_tool(run)],
        model=model_class(model="default", openai_client=client),
        model_settings=ModelSettings(tool_choice="required", temperature=0.0, max_tokens=max_tokens, extra_body=extra_body),
    )


async def run_agent(base_url: str, monitor: Monitor, api: str = "responses", questions=QUESTIONS, max_tokens: int = 48,
                    guard: list | None = None) -> AgentRun:
    """Ask each question in turn (one conversation); the monitor records every model turn."""
    from agents import Runner, set_tracing_disabled

    set_tracing_disabled(True)  # nothing leaves this machine
    client = monitored_async_openai(monitor, base_url)
    run = AgentRun()
    extra_body = monitor.request_body() | ({"guard": guard} if guard else {})
    agent = build_agent(api, client, run, extra_body, max_tokens)
    items: list = []
    for q in questions:
        result = await Runner.run(agent, items + [{"role": "user", "content": q}], max_turns=4)
        run.answers.append(str(result.final_output))
        items = result.to_input_list()
    run.items = items
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--api", choices=("responses", "chat"), default="responses")
    ap.add_argument("--probe", default="concession", help="a probe read at every token (position token)")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--record", default=None, help="JSONL file for the monitor's turns")
    args = ap.parse_args(argv)
    monitor = Monitor(None, rules=[AlarmRule(args.probe, args.threshold, consecutive=3)], record=args.record,
                      on_alarm=lambda a: print(f"  [alarm] {a}"))
    run = asyncio.run(run_agent(args.base_url, monitor, args.api))
    for call in run.calls:
        print("tool call:", call)
    for q, a in zip(QUESTIONS, run.answers):
        print(f"Q: {q}\nA: {a}")
    for turn in monitor.turns:
        scores = [s for s in turn.per_token.get(args.probe, []) if s is not None]
        mean = sum(scores) / len(scores) if scores else float("nan")
        print(f"turn {turn.turn}: {len(scores)} tokens scored, mean {args.probe} {mean:.2f}, alarms {len(turn.alarms)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
