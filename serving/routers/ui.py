"""The web catalog at ``/ui``: server-rendered, read-only pages of the registry (``serving.catalog``).

Routes: ``/ui`` (overview), ``/ui/search?q=&kind=&tag=&owner=`` (``/ui/search.json`` for results as
you type), ``/ui/{kind}`` (a list), ``/ui/{kind}/{name}``, ``/ui/{kind}/{name}/history``,
``/ui/{kind}/{name}/diff?a=V1&b=V2``, ``/ui/lineage``, ``/ui/lineage/{kind}/{name}``, and
``/ui/static/...`` (the style sheet and script, served from the package: nothing comes from a CDN).
Kinds: ``entities``, ``sources``, ``views``, ``on-demand-views``, ``services``.

With API keys configured every page needs a key with the ``read`` scope, sent as for the API
(``X-API-Key`` or ``Authorization: Bearer``) or, from a browser, entered once in the form at
``/ui/login``, which keeps it in a cookie (``HttpOnly``, ``SameSite=Strict``, path ``/ui``, for the
browser session). A page asked for without a valid key answers 401 with that form; a key without the
``read`` scope 403. Only the static files are open.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, Request  # noqa: TID253
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from serving.catalog import pages
from serving.catalog.health import HealthBoard
from serving.catalog.index import KINDS, CatalogIndex, IndexCache
from serving.responses import JSONBytesResponse
from serving.state import state_of

router = APIRouter(prefix="/ui", include_in_schema=False)
STATIC = Path(__file__).resolve().parent.parent / "catalog" / "static"
COOKIE = "featurestore_key"
HEADERS = {
    # Nothing is fetched from elsewhere; inline styles are matplotlib's (in its SVG charts).
    "Content-Security-Policy": "default-src 'none'; style-src 'self' 'unsafe-inline'; script-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_LOGIN_BYTES = 8192


@dataclass
class CatalogState:
    """What the catalog keeps per app: the API keys (None: open), the index and the health board."""

    auth: object | None
    index: IndexCache | None = None
    board: HealthBoard | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def parts(self, store) -> tuple[CatalogIndex, HealthBoard]:
        with self.lock:
            if self.index is None:
                self.index, self.board = IndexCache(store), HealthBoard(store)
        return self.index.current(), self.board


def _catalog(request: Request) -> CatalogState:
    return request.app.state.catalog


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def _key_of(request: Request) -> str | None:
    header = request.headers.get("x-api-key")
    if header:
        return header
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(COOKIE)


def _refused(request: Request, *, json: bool = False) -> Response | None:
    """None when the request may read the catalog, else the answer refusing it."""
    auth = _catalog(request).auth
    if auth is None:
        return None
    scopes = auth.scopes_of(_key_of(request))
    if scopes is not None and "read" in scopes:
        return None
    status = 401 if scopes is None else 403
    message = ("missing or invalid API key (send X-API-Key, Authorization: Bearer, or sign in at /ui/login)"
               if status == 401 else "this API key lacks the 'read' scope")
    if json:
        return JSONBytesResponse({"error": {"type": "Unauthorized" if status == 401 else "Forbidden",
                                            "message": message}}, status_code=status,
                                 headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _html(pages.login("" if status == 401 else message, target), status)


def _page(request: Request, build) -> Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    store = state_of(request).store
    project = store.config.project
    try:
        index, board = _catalog(request).parts(store)
        return _html(build(index, board, project))
    except pages.PageNotFound as exc:
        return _html(pages.not_found(str(exc), project), 404)
    except pages.BadRequest as exc:
        return _html(pages.bad_request(str(exc), project), 400)


@router.get("/static/{name}")
def static(name: str) -> Response:
    path = STATIC / name
    if name not in {p.name for p in STATIC.iterdir()}:
        return Response("not found", status_code=404, media_type="text/plain")
    media = {"css": "text/css", "js": "text/javascript"}.get(path.suffix.lstrip("."), "application/octet-stream")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=300",
                                                         "X-Content-Type-Options": "nosniff"})


@router.get("/login")
def login_form(request: Request, next: str = "/ui") -> Response:
    return _html(pages.login(next_url=_safe_next(next)))


@router.post("/login")
async def login(request: Request) -> Response:
    body = await request.body()
    form = parse_qs(body[:MAX_LOGIN_BYTES].decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/ui"])[0])
    auth = _catalog(request).auth
    if auth is None:
        return RedirectResponse(target, status_code=303)
    scopes = auth.scopes_of(key)
    if scopes is None or "read" not in scopes:
        message = "That key is not valid here." if scopes is None else "That key lacks the 'read' scope."
        return _html(pages.login(message, target), 401 if scopes is None else 403)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict", path="/ui",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


def _safe_next(target: str) -> str:
    """Only a path of this catalog (no other site to be sent to after signing in)."""
    return target if target.startswith("/ui") and not target.startswith("//") and "\\" not in target else "/ui"


@router.get("")
def overview(request: Request) -> Response:
    return _page(request, lambda index, board, project: pages.overview(index, board.current(index.catalog), project))


@router.get("/search")
def search(request: Request, q: str = "", kind: str = "", tag: str = "", owner: str = "") -> Response:
    return _page(request, lambda index, board, project: pages.search(index, project, q, kind, tag, owner))


@router.get("/search.json")
def search_json(request: Request, q: str = "", kind: str = "", tag: str = "", owner: str = "",
                limit: int = 50) -> Response:
    refused = _refused(request, json=True)
    if refused is not None:
        return refused
    store = state_of(request).store
    index, _ = _catalog(request).parts(store)
    if kind and kind not in KINDS:
        return JSONBytesResponse({"error": {"type": "InvalidInputError",
                                            "message": f"kind={kind!r} is not one of {', '.join(KINDS)}"}},
                                 status_code=400)
    hits = index.search(q, kind, tag, owner)
    return JSONBytesResponse({"version": index.version, "total": len(hits),
                              "results": pages.search_results(hits[:max(1, min(limit, 200))])},
                             headers={"Cache-Control": "no-store"})


@router.get("/lineage")
def lineage(request: Request) -> Response:
    return _page(request, lambda index, board, project: pages.lineage_page(index, project))


@router.get("/lineage/{kind}/{name}")
def lineage_of(request: Request, kind: str, name: str) -> Response:
    return _page(request, lambda index, board, project: pages.lineage_page(index, project, kind, name))


@router.get("/{kind}")
def kind_list(request: Request, kind: str) -> Response:
    return _page(request, lambda index, board, project: pages.kind_list(index, project, kind))


@router.get("/{kind}/{name}")
def object_page(request: Request, kind: str, name: str) -> Response:
    return _page(request, lambda index, board, project: pages.object_page(
        index, board.current(index.catalog), project, kind, name))


def _versions(request: Request, kind: str, name: str):
    if kind not in KINDS:
        raise pages.PageNotFound(f"there is no kind {kind!r} (kinds: {', '.join(KINDS)})")
    return state_of(request).store.registry.history(KINDS[kind][0], name)


@router.get("/{kind}/{name}/history")
def history(request: Request, kind: str, name: str) -> Response:
    return _page(request, lambda index, board, project: pages.history(
        index, project, kind, name, _versions(request, kind, name)))


@router.get("/{kind}/{name}/diff")
def diff(request: Request, kind: str, name: str, a: str | None = None, b: str | None = None) -> Response:
    return _page(request, lambda index, board, project: pages.diff(
        index, project, kind, name, _versions(request, kind, name), a, b))
