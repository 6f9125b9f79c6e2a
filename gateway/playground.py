"""The browser playground (api.md section 10): static files served from the installed package.

The page and its assets are public, like /health: they hold no data and no
key, and a browser cannot attach an `Authorization` header to a navigation
anyway. Everything the page shows comes from the public API, and every one of
those calls carries the key the user typed into the page (kept in the tab's
sessionStorage), so `--api-key` guards exactly what it guarded before. The
page is same-origin with the API, so `--cors-origin` does not come into it.

The files are read once when the app is built; nothing is fetched at run time
(no CDN), and a Content-Security-Policy keeps the page from loading or sending
anything anywhere but this server.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from starlette.responses import Response
from starlette.routing import Route

ASSET_DIR = "playground"
ASSET_PREFIX = "/playground/"
# name -> media type; only these files are served (no directory listing, no path walking).
ASSET_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "answers.js": "text/javascript; charset=utf-8",
    "controls.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "request.js": "text/javascript; charset=utf-8",
    "snippets.js": "text/javascript; charset=utf-8",
    "colour.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "metadata.js": "text/javascript; charset=utf-8",
    "libraries.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The files change only with the package; revalidating keeps an upgraded server's page current.
    "Cache-Control": "no-cache",
}
PUBLIC_PATHS = frozenset({"/", *(ASSET_PREFIX + name for name in ASSET_TYPES)})


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str


def load_assets() -> dict[str, Asset]:
    """Every playground file from the installed package, read once."""
    root = resources.files("mlx_interp.gateway").joinpath(ASSET_DIR)
    return {name: Asset(root.joinpath(name).read_bytes(), media) for name, media in ASSET_TYPES.items()}


def routes() -> list[Route]:
    assets = load_assets()

    def serve(name: str) -> Response:
        asset = assets[name]
        return Response(asset.body, media_type=asset.media_type, headers=SECURITY_HEADERS)

    async def page(request):
        return serve("index.html")

    async def asset(request):
        name = request.path_params["name"]
        if name not in assets:
            from .errors import NotFound

            raise NotFound(f"no playground file called {name[:80]!r}", param="path")
        return serve(name)

    return [
        Route("/", page, methods=["GET"]),
        Route(ASSET_PREFIX + "{name}", asset, methods=["GET"]),
    ]
