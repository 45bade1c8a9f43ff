"""The status web site: read-only pages about the active runs, served with aiohttp.

Routes (GET and HEAD only; a flow name in a path is percent-encoded, `/` as `%2F`):

- `/`: the index of active runs;
- `/flows/<name>/`: the live page (steps that need attention, the graph, recent events).
  It updates itself: `/flows/<name>/events` sends a server-sent event each time the run's
  views are rendered again. The page then fetches `/flows/<name>/fragment` (JSON with the
  changed parts as HTML) and swaps them in;
- `/flows/<name>/map`: the PNG graph with its clickable image map;
- `/flows/<name>/digraph.svg`, `digraph.png`, `digraph.dot`, `dump.txt`, `calendar.ics`:
  the rendered files, read from the render service's directory for that flow. No other
  file is served: a request names a view, never a path.

With a `webauth` section every route requires its credentials (see `thehat.webauth`): a
token as `Authorization: Bearer`, as `?token=` or as the session cookie that a page opened
with `?token=` sets, or HTTP basic authentication. Anything else gets 401. A page (the
index, a live page, an image map) opened with `?token=` is redirected to its address
without the token, so the token leaves the address bar and the browser history. Downloads,
events and fragments accept `?token=` in place, because calendar clients that subscribe to
`calendar.ics` follow a redirect but keep no cookies.

Every response carries `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`
and a Content-Security-Policy. Pages allow only their own inline style and script, by nonce;
other responses allow no script at all.

The site learns about changes only from the render service (`daemon.renderer`); without one
it serves the pages and the index, but no graph or downloads, and pages do not update.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from thehat import webpages
from thehat.webauth import COOKIE_NAME, REALM

if TYPE_CHECKING:
    from thehat.config import Config
    from thehat.daemon import Daemon
    from thehat.webauth import WebAuth

log = logging.getLogger(__name__)

# File name in a URL -> (view in VIEW_FILES, media type).
DOWNLOADS: Final = {
    "digraph.svg": ("svg", "image/svg+xml"),
    "digraph.png": ("png", "image/png"),
    "digraph.dot": ("dot", "text/vnd.graphviz; charset=utf-8"),
    "dump.txt": ("text", "text/plain; charset=utf-8"),
    "calendar.ics": ("ical", "text/calendar; charset=utf-8"),
}
# Open event streams allowed per flow; one more gets 503.
MAX_SUBSCRIBERS_PER_FLOW: Final = 100
# Seconds between comment lines on an idle event stream, so that proxies keep it open and a
# closed connection is noticed.
HEARTBEAT_SECONDS: Final = 15.0
# Milliseconds a browser waits before it reconnects a broken event stream.
RECONNECT_MILLISECONDS: Final = 3000
RECENT_EVENTS: Final = 20
# Seconds `stop` waits for requests in flight before it closes their connections.
SHUTDOWN_SECONDS: Final = 5.0

# The routes of HTML pages. A request with `?token=` to one of them gets a redirect.
PAGE_ROUTES: Final = frozenset({"index", "flow", "page", "map"})

COMMON_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# For everything but pages: no script, no plug-ins, no framing, in a sandbox. Inline style
# stays allowed, so that an SVG opened on its own still draws as graphviz styled it.
FILE_POLICY: Final = ("default-src 'none'; style-src 'unsafe-inline'; object-src 'none'; "
                      "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; sandbox")


def page_policy(nonce: str) -> str:
    """Return the Content-Security-Policy of a page whose style and script carry `nonce`."""
    return (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")


def base_url(address: str, port: int) -> str:
    """Return the URL of a site bound to `address` and `port`; a wildcard address gives the
    host name.

    >>> base_url("127.0.0.1", 8808), base_url("::1", 8808)
    ('http://127.0.0.1:8808', 'http://[::1]:8808')
    """
    host = socket.gethostname() if address in ("", "0.0.0.0", "::") else address
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def sse_event(kind: str, data: object) -> bytes:
    """Encode one server-sent event whose data is JSON (a single line).

    >>> sse_event("rendered", {"version": 2})
    b'event: rendered\\ndata: {"version": 2}\\n\\n'
    """
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


@dataclass(eq=False)
class _Subscriber:
    """One open event stream: woken with the newest render version, or to close."""

    version: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def notify(self, version: int) -> None:
        self.version = version
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class WebSite:
    """Serves the status pages of `daemon`'s runs on `wfengine.bindaddr`/`bindport`.

    `start` binds and returns the port; `stop` closes every connection. When the
    configuration has no `baseurl`, `start` sets `daemon.baseurl` to the bound address, so
    that status blocks in chat point at the site.
    """

    def __init__(self, daemon: Daemon, config: Config) -> None:
        self.daemon = daemon
        self.config = config
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._subscribers: dict[str, set[_Subscriber]] = {}
        # Flow -> (identity of the SVG file, its sanitized markup).
        self._graphs: dict[str, tuple[tuple[int, int, int], str]] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        """Return the aiohttp application with every route; `start` serves it."""
        middlewares: list[Middleware] = [_log_requests]
        if self.config.webauth is not None:
            middlewares.append(_authentication(self.config.webauth))
        app = web.Application(middlewares=middlewares)
        app.on_response_prepare.append(_add_security_headers)
        app.router.add_get("/", self._index, name="index")
        app.router.add_get("/flows/{name}", self._redirect_to_page, name="flow")
        app.router.add_get("/flows/{name}/", self._live_page, name="page")
        app.router.add_get("/flows/{name}/events", self._events)
        app.router.add_get("/flows/{name}/fragment", self._fragment)
        app.router.add_get("/flows/{name}/map", self._map_page, name="map")
        app.router.add_get("/flows/{name}/{file}", self._download)
        return app

    async def start(self) -> int:
        """Bind to the configured address and serve; return the port.

        Raises OSError when the address cannot be bound (a port in use, an unknown host).
        """
        engine = self.config.engine
        runner = web.AppRunner(self.build_app(), access_log=None,
                               shutdown_timeout=SHUTDOWN_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, engine.bindaddr, engine.bindport or 0)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        if self.daemon.renderer is not None:
            self.daemon.renderer.listeners.append(self._on_rendered)
        else:
            log.warning("the status web site has no render service: no graphs, no downloads "
                        "and no live updates")
        url = base_url(engine.bindaddr, self.port)
        if self.daemon.baseurl is None:
            self.daemon.baseurl = url
        log.info("status web site listening on %s", url)
        return self.port

    async def stop(self) -> None:
        """Close every event stream, stop listening and close all connections."""
        renderer = self.daemon.renderer
        if renderer is not None and self._on_rendered in renderer.listeners:
            renderer.listeners.remove(self._on_rendered)
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("status web site on port %s stopped", self.port)

    async def _on_rendered(self, flow: str, version: int) -> None:
        for subscriber in self._subscribers.get(flow, ()):
            subscriber.notify(version)

    # -- pages ------------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        summaries = []
        attachments = list(self.daemon.attachments.values())
        for name in sorted(self.daemon.runs):
            run = await self.daemon.snapshot(name)
            if run is None:
                continue
            summaries.append(webpages.RunSummary(
                name=name, counts=dict(run.counts()), total=len(run.steps),
                actionable=len(run.actionable()), reverting=run.reverting,
                failed_step=run.failed_step, ended=run.ended,
                conversations=attachments.count(name)))
        nonce = secrets.token_urlsafe(16)
        page = webpages.index_page(summaries, self.daemon.clock.now(), self.daemon.zone, nonce)
        return _page_response(page, nonce)

    async def _redirect_to_page(self, request: web.Request) -> web.Response:
        name = self._run_name(request)
        raise web.HTTPPermanentRedirect(webpages.flow_path(name))

    async def _live_page(self, request: web.Request) -> web.Response:
        name = self._run_name(request)
        parts = await self._live_parts(name)
        nonce = secrets.token_urlsafe(16)
        return _page_response(webpages.live_page(name, parts, nonce), nonce)

    async def _fragment(self, request: web.Request) -> web.Response:
        name = self._run_name(request)
        parts = await self._live_parts(name)
        return web.json_response(parts.as_json(), headers={"Cache-Control": "no-store"})

    async def _map_page(self, request: web.Request) -> web.Response:
        name = self._run_name(request)
        path = await self._view_file(name, "cmapx")
        areas = ""
        if path is not None:
            try:
                areas = webpages.image_map(await asyncio.to_thread(path.read_bytes))
            except (OSError, ValueError) as exc:
                log.warning("cannot read the image map of flow %s: %s", name, exc)
        nonce = secrets.token_urlsafe(16)
        return _page_response(webpages.map_page(name, areas, nonce), nonce)

    async def _live_parts(self, name: str) -> webpages.LiveParts:
        """Collect the changing parts of the live page of run `name`.

        The render version is read before the graph, so the version a page shows is never
        newer than its graph. At worst the page fetches the same graph once more.
        """
        renderer = self.daemon.renderer
        version = 0 if renderer is None else renderer.version(name)
        graph = await self._graph_markup(name)
        run = await self.daemon.snapshot(name)
        if run is None:
            raise web.HTTPNotFound(text="No active run of this flow; / lists the active runs.")
        entries = await self.daemon.recent_history(name, RECENT_EVENTS)
        now = self.daemon.clock.now()
        zone = self.daemon.zone
        return webpages.LiveParts(
            version=version, progress=webpages.progress_html(run),
            steps=webpages.steps_table(run, now), graph=graph,
            events=webpages.events_table(entries, zone), updated=webpages.updated_html(now, zone))

    async def _graph_markup(self, name: str) -> str:
        """Return the run's SVG graph, sanitized for inlining; cached until the file changes."""
        renderer = self.daemon.renderer
        if renderer is None:
            return webpages.graph_message("Graphs are not rendered by this daemon.")
        path = await self._view_file(name, "svg")
        if path is None:
            error = renderer.last_error(name)
            if error:
                return webpages.graph_message(f"The graph could not be drawn: {error}")
            return webpages.graph_message("The graph has not been drawn yet.")
        try:
            identity = await asyncio.to_thread(_file_identity, path)
            cached = self._graphs.get(name)
            if cached is not None and cached[0] == identity:
                return cached[1]
            markup = await asyncio.to_thread(_read_svg, path)
        except (OSError, ValueError) as exc:
            log.warning("cannot show the graph of flow %s from %s: %s", name, path, exc)
            return webpages.graph_message("The graph could not be read; see the log.")
        for stale in set(self._graphs) - set(self.daemon.runs):
            del self._graphs[stale]
        self._graphs[name] = (identity, markup)
        return markup

    # -- files ------------------------------------------------------------------------------

    async def _download(self, request: web.Request) -> web.StreamResponse:
        name = self._run_name(request)
        download = DOWNLOADS.get(request.match_info["file"])
        if download is None:
            raise web.HTTPNotFound(text="No such file; the live page links every download.")
        view, media_type = download
        path = await self._view_file(name, view)
        if path is None:
            raise web.HTTPNotFound(text="This view has not been rendered (yet).")
        return web.FileResponse(path, headers={"Content-Type": media_type,
                                               "Cache-Control": "no-cache"})

    async def _view_file(self, name: str, view: str) -> Path | None:
        """Return the rendered file of a view of flow `name`, or None when it does not exist.

        The path is built by the render service from the flow name and a fixed file name. It
        must be a regular file, not a symbolic link, inside the web directory.
        """
        renderer = self.daemon.renderer
        if renderer is None:
            return None
        path = renderer.path(name, view)
        webdir = renderer.webdir
        return await asyncio.to_thread(_regular_file_inside, path, webdir)

    def _run_name(self, request: web.Request) -> str:
        """Return the flow name of the request's path; raise 404 unless its run is active."""
        name = request.match_info["name"]
        if name not in self.daemon.runs:
            raise web.HTTPNotFound(text="No active run of this flow; / lists the active runs.")
        return name

    # -- server-sent events -----------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        name = self._run_name(request)
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                   "X-Accel-Buffering": "no"}
        if request.method == "HEAD":
            return web.Response(headers=headers)
        subscribers = self._subscribers.setdefault(name, set())
        if len(subscribers) >= MAX_SUBSCRIBERS_PER_FLOW:
            log.warning("rejected an event stream of flow %s: %d are open already", name,
                        len(subscribers))
            raise web.HTTPServiceUnavailable(
                text="Too many open live pages of this flow; try again later.",
                headers={"Retry-After": "30"})
        renderer = self.daemon.renderer
        subscriber = _Subscriber(0 if renderer is None else renderer.version(name))
        subscribers.add(subscriber)
        response = web.StreamResponse(headers=headers)
        try:
            await response.prepare(request)
            await response.write(f"retry: {RECONNECT_MILLISECONDS}\n\n".encode()
                                 + sse_event("rendered", {"version": subscriber.version}))
            await self._stream(name, subscriber, response)
        except ConnectionError:
            log.debug("event stream of flow %s closed by the client", name)
        finally:
            subscribers.discard(subscriber)
            if not subscribers and self._subscribers.get(name) is subscribers:
                del self._subscribers[name]
        return response

    async def _stream(self, name: str, subscriber: _Subscriber,
                      response: web.StreamResponse) -> None:
        """Write an event per render of flow `name`, and heartbeats, until the subscriber
        is closed or the run is no longer active."""
        while not subscriber.closed:
            try:
                await asyncio.wait_for(subscriber.wake.wait(), HEARTBEAT_SECONDS)
            except TimeoutError:
                if name not in self.daemon.runs:
                    await response.write(sse_event("gone", {"flow": name}))
                    return
                await response.write(b": heartbeat\n\n")
                continue
            subscriber.wake.clear()
            if subscriber.closed:
                return
            await response.write(sse_event("rendered", {"version": subscriber.version}))

    def subscriber_count(self, flow: str) -> int:
        """Return how many event streams of `flow` are open."""
        return len(self._subscribers.get(flow, ()))


# -- helpers ----------------------------------------------------------------------------------


def _page_response(page: str, nonce: str) -> web.Response:
    return web.Response(text=page, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": page_policy(nonce),
                                 "Cache-Control": "no-store"})


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for key, value in COMMON_HEADERS.items():
        response.headers.setdefault(key, value)
    response.headers.setdefault("Content-Security-Policy", FILE_POLICY)


def _authentication(auth: WebAuth) -> Middleware:
    """Return a middleware that lets through only requests with `auth`'s credentials."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        query_token = request.query.get("token")
        if query_token is not None:
            # A query string reads `+` as a space, and tokens have no spaces, so a `+` typed
            # unescaped in a token (as base64 has) is put back.
            query_token = query_token.replace(" ", "+")
        if query_token is not None and auth.token is not None:
            if not auth.token_matches(query_token):
                raise _unauthorized(auth)
            if request.match_info.route.name in PAGE_ROUTES:
                raise _redirect_without_token(request, auth)
            return await handler(request)
        header = request.headers.get("Authorization")
        if header is not None and auth.authorization_matches(header):
            return await handler(request)
        cookie = request.cookies.get(COOKIE_NAME)
        if cookie is not None and auth.cookie_matches(cookie):
            return await handler(request)
        raise _unauthorized(auth)

    return authenticate


def _redirect_without_token(request: web.Request, auth: WebAuth) -> web.HTTPSeeOther:
    """Return a redirect to the request's address without `token`, setting the cookie."""
    location = request.rel_url.without_query_params("token")
    redirect = web.HTTPSeeOther(str(location), headers={"Cache-Control": "no-store"})
    # SameSite=Lax, because a browser sends a Strict cookie on no request that another site
    # started, and a `?token=` link clicked in a web chat client is one. The site serves only
    # GET and HEAD, which change nothing, so Lax gives another site nothing to forge.
    redirect.set_cookie(COOKIE_NAME, auth.cookie_value(), path="/", httponly=True,
                        samesite="Lax")
    return redirect


def _unauthorized(auth: WebAuth) -> web.HTTPUnauthorized:
    ways = []
    if auth.token is not None:
        ways.append("open the address with ?token=<token> or send Authorization: Bearer "
                    "<token>")
    if auth.basic:
        ways.append("log in with the user name and password of the webauth section")
    scheme = "Basic" if auth.basic else "Bearer"
    return web.HTTPUnauthorized(
        text=f"Authentication required: {', or '.join(ways)}.",
        headers={"WWW-Authenticate": f'{scheme} realm="{REALM}"',
                 "Cache-Control": "no-store"})


@web.middleware
async def _log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Only the path is logged: the query string may contain the web site's token.
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        log.debug("%s %r from %s -> %d", request.method, request.path, request.remote,
                  exc.status)
        raise
    log.debug("%s %r from %s -> %d", request.method, request.path, request.remote,
              response.status)
    return response


def _regular_file_inside(path: Path, directory: Path) -> Path | None:
    """Return `path` if it is a regular file (not a symbolic link) below `directory`."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        resolved = path.resolve(strict=True)
        root = directory.resolve(strict=True)
    except OSError:
        return None
    return resolved if root in resolved.parents else None


def _file_identity(path: Path) -> tuple[int, int, int]:
    # Rendered files are replaced, never rewritten in place, so a new file has a new inode.
    status = os.stat(path)
    return status.st_ino, status.st_mtime_ns, status.st_size


def _read_svg(path: Path) -> str:
    return webpages.sanitize_svg(path.read_bytes())

