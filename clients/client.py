"""MlxInterpClient: the official `openai` client, plus steering and probes as typed arguments.

    client = MlxInterpClient("http://127.0.0.1:8000/v1")
    reply = client.chat([{"role": "user", "content": "Hi"}],
                        steer=[Steer("green_red", 1.5)], probes=["sycophancy"])
    probe_scores(reply)["sycophancy"].score

Everything the server refuses, and a server that is not there, surfaces as
`ServerError` with a one-line message (the original `openai` exception is its cause).
`client.openai` is the plain `openai.OpenAI` for anything else.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import openai

from .errors import ServerError, describe
from .extensions import ProbesLike, SteerLike, extension_body, probes_header, steer_header

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
API_KEY_ENV = "MLX_INTERP_API_KEY"
BASE_URL_ENV = "MLX_INTERP_BASE_URL"
# the server accepts any key when it runs without one; the openai client insists on some string
NO_KEY = "no-key"
DEFAULT_TIMEOUT_S = 600.0
# a local server either answers or is down: retrying only delays the error message
DEFAULT_RETRIES = 0


def resolve_base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


@contextmanager
def one_line_errors(base_url: str) -> Iterator[None]:
    """Every failure inside becomes a ServerError with one readable line (the original is its cause)."""
    try:
        yield
    except ServerError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise describe(exc, base_url) from exc


class MlxInterpClient:
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_RETRIES,
        **openai_kwargs: Any,
    ):
        self.base_url = resolve_base_url(base_url)
        self.api_key = api_key or os.environ.get(API_KEY_ENV) or None
        self.openai = openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key or NO_KEY,
            timeout=timeout,
            max_retries=max_retries,
            **openai_kwargs,
        )
        self._default_model: str | None = None

    # --- discovery -------------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        with one_line_errors(self.base_url):
            return self.openai.get(path, cast_to=object)

    def models(self) -> list[str]:
        data = self._get("/models")
        return [m["id"] for m in (data or {}).get("data", []) if isinstance(m, dict) and "id" in m]

    def vectors(self) -> list[dict]:
        """The steering vectors the server has loaded, with their metadata."""
        data = self._get("/steering/vectors")
        return list((data or {}).get("data", [])) if isinstance(data, dict) else list(data or [])

    def probes(self) -> list[dict]:
        """The probes the server has loaded, with their metadata."""
        data = self._get("/probes")
        return list((data or {}).get("data", [])) if isinstance(data, dict) else list(data or [])

    def health(self) -> dict:
        """GET /health (it lives beside /v1, and needs no key)."""
        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        with one_line_errors(self.base_url):
            response = self.openai.with_options(base_url=root).get("/health", cast_to=object)
        return response if isinstance(response, dict) else {"status": response}

    def default_model(self) -> str:
        """The first model the server lists; used when a call names none."""
        if self._default_model is None:
            models = self.models()
            if not models:
                raise ServerError(f"the server at {self.base_url} lists no models")
            self._default_model = models[0]
        return self._default_model

    # --- generation ------------------------------------------------------------------------

    def _extensions(self, steer: SteerLike | None, probes: ProbesLike | None, use_headers: bool, kwargs: dict) -> dict:
        if use_headers:
            headers = dict(kwargs.pop("extra_headers", None) or {})
            if steer:
                headers.update(steer_header(steer))
            if probes:
                headers.update(probes_header(probes))
            if headers:
                kwargs["extra_headers"] = headers
        else:
            body = dict(kwargs.pop("extra_body", None) or {})
            body.update(extension_body(steer=steer, probes=probes))
            if body:
                kwargs["extra_body"] = body
        return kwargs

    def chat(
        self,
        messages: list[dict],
        *,
        model: str | None = None,
        steer: SteerLike | None = None,
        probes: ProbesLike | None = None,
        use_headers: bool = False,
        **kwargs: Any,
    ):
        """A non-streaming chat completion (an openai `ChatCompletion`)."""
        kwargs = self._extensions(steer, probes, use_headers, kwargs)
        with one_line_errors(self.base_url):
            return self.openai.chat.completions.create(
                model=model or self.default_model(), messages=messages, **kwargs
            )

    def stream_chat(
        self,
        messages: list[dict],
        *,
        model: str | None = None,
        steer: SteerLike | None = None,
        probes: ProbesLike | None = None,
        use_headers: bool = False,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Stream a chat completion: yields openai `ChatCompletionChunk`s as they arrive."""
        kwargs = self._extensions(steer, probes, use_headers, kwargs)
        with one_line_errors(self.base_url):
            stream = self.openai.chat.completions.create(
                model=model or self.default_model(), messages=messages, stream=True, **kwargs
            )
            with stream:
                yield from stream

    def complete(
        self,
        prompt: str,
        *,
        model: str | None = None,
        steer: SteerLike | None = None,
        probes: ProbesLike | None = None,
        use_headers: bool = False,
        **kwargs: Any,
    ):
        """A non-streaming text completion (`max_tokens=0, echo=True` only scores the prompt)."""
        kwargs = self._extensions(steer, probes, use_headers, kwargs)
        with one_line_errors(self.base_url):
            return self.openai.completions.create(model=model or self.default_model(), prompt=prompt, **kwargs)

    def close(self) -> None:
        self.openai.close()

    def __enter__(self) -> "MlxInterpClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
