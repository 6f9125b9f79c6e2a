"""One-line descriptions of what went wrong talking to the server.

Command-line tools print `error: <this>` and exit non-zero; a library user can
catch `ServerError` (or the `openai` exceptions it wraps) and show the same line.
"""

from __future__ import annotations

from typing import Any

# exit statuses of the client tools
EXIT_OK = 0
EXIT_SERVER = 1  # the server refused or failed the request
EXIT_UNREACHABLE = 3  # nothing answered at the base URL


class ServerError(Exception):
    """A request the server refused or could not be sent; str() is one readable line."""

    def __init__(self, message: str, status: int | None = None, exit_code: int = EXIT_SERVER):
        super().__init__(message)
        self.status = status
        self.exit_code = exit_code


def _error_object(body: Any) -> dict:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    if isinstance(body, dict):
        return body
    return {}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe(exc: BaseException, base_url: str | None = None) -> ServerError:
    """Turn an `openai` / `httpx` / socket exception into a ServerError with one readable line."""
    import openai  # only when something failed: keeps `import clients` light

    where = f" at {base_url}" if base_url else ""
    if isinstance(exc, ServerError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ServerError(f"the server{where} did not answer in time", exit_code=EXIT_UNREACHABLE)
    if isinstance(exc, openai.APIConnectionError):
        return ServerError(
            f"cannot reach the server{where}; is `mlx-interp serve` (or the service) running?",
            exit_code=EXIT_UNREACHABLE,
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        error = _error_object(exc.body)
        message = _one_line(error.get("message") or exc.message or "request failed")
        if status == 401:
            return ServerError(f"the server{where} refused the API key (401): {message}", status=status)
        param = error.get("param")
        detail = f" [{param}]" if param and str(param) not in message else ""
        return ServerError(f"{message}{detail} (HTTP {status})", status=status)
    if isinstance(exc, openai.APIError):  # e.g. an error event in the middle of a stream
        return ServerError(_one_line(_error_object(exc.body).get("message") or exc.message or "request failed"))
    if isinstance(exc, (ConnectionError, OSError)):
        return ServerError(f"cannot reach the server{where}: {_one_line(exc)}", exit_code=EXIT_UNREACHABLE)
    return ServerError(_one_line(f"{type(exc).__name__}: {exc}"))
