"""Routes of the HTTP server (api.md section 6) and the middleware around them."""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mlx_interp.steering.artifacts import ArtifactError, check_name

from . import auth, origin, playground
from .catalog import ReadOnlyArtifact
from .edge import check_head
from .errors import APIError, BadRequest, Conflict, NotFound, PayloadTooLarge, Unavailable, Unprocessable, one_line
from .jsonio import JSONResponse, dumps, error_response, nesting_depth, read_json_object, starlette_handler
from .limits import Limits
from .metrics import Metrics
from .protocol import CHAT, TEXT, model_object, now
from . import responses_api
from .responder import Run, SSEResponse, wait_for_response
from .validation import Context, parse_request

if TYPE_CHECKING:
    from mlx_interp.probes.probe import Probe
    from mlx_interp.steering.model import LoadedModel
    from mlx_interp.steering.vectors import SteeringVector

    from .catalog import Shelf
    from .engine import Engine

UPLOAD_FIELDS = {"name", "metadata", "safetensors"}
MAX_METADATA_DEPTH = 32  # an artifact's JSON is flat in practice; 600 levels used to hit Python's recursion limit
# No key needed: /health, and the playground's static files (their API calls carry the key).
PUBLIC_PATHS = auth.OPEN_PATHS | playground.PUBLIC_PATHS
CLIENT_GONE = 499  # nginx's convention; the client never sees it, /metrics does

log = logging.getLogger("mlx_interp.gateway")


@dataclass
class Gateway:
    """Everything the routes share: the model's engine, the libraries, the limits and keys."""

    lm: LoadedModel
    engine: Engine
    vectors: Shelf[SteeringVector]
    probes: Shelf[Probe]
    limits: Limits
    keys: auth.Keys = field(default_factory=auth.Keys)
    presets: dict = field(default_factory=dict)
    model_ids: tuple[str, ...] = ("default",)
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: frozenset | None = None  # Host header values accepted (None: any); set for keyless loopback
    metrics: Metrics = field(default_factory=Metrics)
    created: int = field(default_factory=now)

    def context(self) -> Context:
        return Context(
            tokenizer=self.lm.tokenizer,
            vocab_size=self.engine.vocab_size,
            model_ids=self.model_ids,
            presets=self.presets,
            vectors=self.vectors,
            probes=self.probes,
            limits=self.limits,
        )


class Guard:
    """API-key check on every route but /health, and request counting for /metrics."""

    def __init__(self, app, gateway: Gateway):
        self.app = app
        self.gw = gateway

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500, "started": False}

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        try:
            headers = Headers(scope=scope)
            try:
                check_head(scope)
                origin.check_host(self.gw.allowed_hosts, headers)
                origin.check_origin(scope, headers, self.gw.cors_origins)
                if scope["path"] not in PUBLIC_PATHS:
                    auth.check_api(self.gw.keys, headers)
            except APIError as exc:
                return await error_response(exc)(scope, receive, counted_send)
            try:
                await self.app(scope, receive, counted_send)
            except Exception as exc:  # noqa: BLE001 - one log line (as_api_error), no second traceback from the server
                if status["started"]:
                    log.error("response to %s %s broke off: %s", scope["method"], scope["path"][:100], one_line(exc))
                else:
                    await error_response(exc)(scope, receive, counted_send)
        finally:
            self.gw.metrics.observe_request(scope["path"], scope["method"], status["code"])


# -- completions ---------------------------------------------------------------------------------


async def _generate(request, kind: str):
    gw: Gateway = request.app.state.gateway
    body = await read_json_object(request, gw.limits.max_body_bytes)
    # Parsing tokenizes (and may read long layer specs): off the event loop, like every big piece of work.
    spec = await run_in_threadpool(parse_request, body, request.headers, kind, gw.context())
    run = Run(gw.engine, spec, on_finish=lambda tokens: gw.metrics.observe_generation(spec, tokens))
    if spec.stream:
        return SSEResponse(run)
    result = await wait_for_response(run, request)
    if result is None:
        return Response(status_code=CLIENT_GONE)
    return await run_in_threadpool(JSONResponse, result)


async def responses(request):
    gw: Gateway = request.app.state.gateway
    body = await read_json_object(request, gw.limits.max_body_bytes)
    spec, shape = responses_api.parse(body, request.headers, gw.context(), parse_request)
    run = Run(gw.engine, spec, on_finish=lambda tokens: gw.metrics.observe_generation(spec, tokens))
    if spec.stream:
        return SSEResponse(run, content=responses_api.stream(run, shape))
    if await wait_for_response(run, request) is None:
        return Response(status_code=CLIENT_GONE)
    return JSONResponse(responses_api.whole(run, shape))


async def chat_completions(request):
    return await _generate(request, CHAT)


async def completions(request):
    return await _generate(request, TEXT)


# -- models ------------------------------------------------------------------------------------------


def _models(gw: Gateway) -> list[dict]:
    facts = {"fingerprint": gw.lm.fingerprint, "hidden_size": gw.lm.hidden_size, "num_layers": gw.lm.num_layers}
    base = [model_object(m, gw.created, root=gw.lm.model_id, **facts) for m in gw.model_ids]
    presets = [
        model_object(p.name, gw.created, root=gw.lm.model_id, preset={"steer": p.steer, "probes": p.probes, "guard": p.guard, "description": p.description})
        for p in gw.presets.values()
    ]
    return base + presets


async def list_models(request):
    return JSONResponse({"object": "list", "data": _models(request.app.state.gateway)})


async def get_model(request):
    model_id = request.path_params["model_id"]
    for m in _models(request.app.state.gateway):
        if m["id"] == model_id:
            return JSONResponse(m)
    raise NotFound(f"model {model_id[:80]!r} is not served here", param="model", code="model_not_found")


# -- vectors and probes ------------------------------------------------------------------------------


def _shelf(request):
    gw: Gateway = request.app.state.gateway
    is_probe = request.url.path.startswith("/v1/probes")
    return (gw.probes, "probe") if is_probe else (gw.vectors, "steering vector")


async def list_artifacts(request):
    shelf, kind = _shelf(request)
    return await run_in_threadpool(lambda: JSONResponse({"object": "list", "data": shelf.describe()}))


def _describe_one(shelf, name: str):
    for item in shelf.describe():
        if item["name"] == name:
            return JSONResponse(item)
    return None


async def get_artifact(request):
    shelf, kind = _shelf(request)
    name = request.path_params["name"]
    found = await run_in_threadpool(_describe_one, shelf, name)
    if found is None:
        raise NotFound(f"no {kind} called {name[:80]!r}", param="name")
    return found


def check_metadata(metadata: dict, max_bytes: int) -> None:
    """Metadata is stored, listed and sent back on every listing: bounded in depth and size."""
    depth = nesting_depth(metadata)
    if depth > MAX_METADATA_DEPTH:
        raise BadRequest(f"metadata nests {depth} levels deep; the limit is {MAX_METADATA_DEPTH}", param="metadata")
    size = len(dumps(metadata))
    if size > max_bytes:
        raise PayloadTooLarge(f"metadata is {size} bytes as JSON; the limit is {max_bytes} (--max-metadata-bytes)", param="metadata")


async def upload_artifact(request):
    """POST {"name": NAME, "metadata": {...NAME.json...}, "safetensors": base64 of NAME.safetensors}."""
    gw: Gateway = request.app.state.gateway
    auth.check_admin(gw.keys, request.headers)
    shelf, kind = _shelf(request)
    body = await read_json_object(request, gw.limits.max_upload_bytes)
    unknown = sorted(set(body) - UPLOAD_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; an upload has name, metadata and safetensors", param=unknown[0])
    name, metadata, data = body.get("name"), body.get("metadata"), body.get("safetensors")
    try:
        check_name(name)
    except ArtifactError as exc:
        raise BadRequest(exc.reason, param="name") from None
    if not isinstance(metadata, dict):
        raise BadRequest("metadata must be an object (the artifact's NAME.json)", param="metadata")
    await run_in_threadpool(check_metadata, metadata, gw.limits.max_metadata_bytes)
    if not isinstance(data, str):
        raise BadRequest("safetensors must be the base64 text of the NAME.safetensors file", param="safetensors")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("safetensors is not valid base64", param="safetensors") from None
    try:
        item = await run_in_threadpool(shelf.install, name, raw, metadata)
    except ArtifactError as exc:
        raise Unprocessable(f"{kind} {name!r} refused: {exc.reason}", param="safetensors", code="invalid_artifact") from None
    except FileExistsError as exc:
        raise Conflict(str(exc), param="name") from None
    return JSONResponse(item.describe(), status_code=201)


async def delete_artifact(request):
    gw: Gateway = request.app.state.gateway
    auth.check_admin(gw.keys, request.headers)
    shelf, kind = _shelf(request)
    name = request.path_params["name"]
    try:
        await run_in_threadpool(shelf.remove, name)
    except KeyError:
        raise NotFound(f"no {kind} called {name[:80]!r}", param="name") from None
    except ReadOnlyArtifact:
        raise Conflict(f"{kind} {name!r} lives in a read-only library; only uploaded ones can be deleted", param="name") from None
    except ArtifactError as exc:
        raise BadRequest(exc.reason, param="name") from None
    return JSONResponse({"id": name, "object": kind.replace(" ", "_"), "deleted": True})


# -- health and metrics ------------------------------------------------------------------------------


async def health(request):
    gw: Gateway = request.app.state.gateway
    if not gw.engine.alive:
        raise Unavailable("the model thread has stopped")
    rows, prefilling = gw.engine.slots()
    body = {"status": "ok", "model": gw.lm.model_id, "queue_depth": gw.engine.queue_depth,
            "batch_size": rows, "prefilling": prefilling}
    if gw.engine.ranks is not None:  # serve --ranks: who runs which part of the model
        body["ranks"] = gw.engine.ranks.health()
    return JSONResponse(body)


async def metrics(request):
    gw: Gateway = request.app.state.gateway
    return PlainTextResponse(gw.metrics.render(gw.engine), media_type="text/plain; version=0.0.4")


def create_app(gateway: Gateway) -> Starlette:
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        *playground.routes(),
    ]
    for base in ("/v1/steering/vectors", "/v1/probes"):
        routes += [
            Route(base, list_artifacts, methods=["GET"]),
            Route(base, upload_artifact, methods=["POST"]),
            Route(base + "/{name}", get_artifact, methods=["GET"]),
            Route(base + "/{name}", delete_artifact, methods=["DELETE"]),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(gateway.engine.stop)

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(CORSMiddleware, allow_origins=list(gateway.cors_origins), allow_methods=["GET", "POST", "DELETE"],
                       allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Steer", "X-Probes"]),
            Middleware(Guard, gateway=gateway),
        ],
        # Other exceptions reach Guard, which answers 500 and logs one line (a handler for Exception here
        # would make Starlette re-raise after answering, and the server log a second traceback).
        exception_handlers={APIError: starlette_handler, HTTPException: starlette_handler},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
