"""The status web site, served for real on 127.0.0.1 and read with aiohttp's client."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from typing import ClassVar
from xml.etree import ElementTree

import aiohttp
import icalendar
import pytest
import yaml

from frontends.base import Frontend
from renderers.digraph import DONE, LEGEND
from thehat import cli, web
from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon, open_daemon
from thehat.model import StepState
from thehat.rendering import web_key
from thehat.webauth import WebAuth, parse_webauth_section

from tests.helpers import FakeClock
from tests.web_support import (FLOW, FLOW_PATH, HOSTILE_NOTE, WIKI_NOTE, MemoryConversation,
                               RunningSite, make_datadir, running_site)

SVG = "{http://www.w3.org/2000/svg}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


@pytest.fixture
def datadir(tmp_path: Path) -> Path:
    return make_datadir(tmp_path)


@pytest.fixture
async def site(datadir: Path) -> AsyncIterator[RunningSite]:
    async with running_site(datadir) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def fetch(client: aiohttp.ClientSession, url: str) -> tuple[int, str, dict[str, str]]:
    async with client.get(url, allow_redirects=False) as response:
        return response.status, await response.text(), dict(response.headers)


async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """Send `GET target` exactly as written, with no client-side normalisation of the path."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode("latin-1"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(data.split(b" ", 2)[1]), data


class MarkupScan(HTMLParser):
    """Collects the script elements, event handler attributes and link targets of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[dict[str, str | None]] = []
        self.script_text: list[str] = []
        self.handlers: list[tuple[str, str]] = []
        self.links: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append((tag, name))
            if name in ("href", "xlink:href", "src", "action") and value is not None:
                self.links.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text.append(data)


def scan(markup: str) -> MarkupScan:
    parser = MarkupScan()
    parser.feed(markup)
    parser.close()
    return parser


def svg_node(root: ElementTree.Element, step: str) -> ElementTree.Element:
    """Return the `<g>` of a step in dot's SVG, found by its `<title>`."""
    for group in root.iter(f"{SVG}g"):
        title = group.find(f"{SVG}title")
        if "node" in (group.get("class") or "").split() and title is not None \
                and title.text == step:
            return group
    raise AssertionError(f"no node for step {step!r} in the SVG")


def node_fill(root: ElementTree.Element, step: str) -> str:
    """Return the fill of a step's box as a legend colour name; graphviz writes some colour
    names as RGB values."""
    polygon = next(svg_node(root, step).iter(f"{SVG}polygon"))
    fill = (polygon.get("fill") or "").lower()
    names = {entry[1].lower(): entry[0] for entry in LEGEND}
    return names.get(fill, polygon.get("fill") or "")


# -- index and live page ----------------------------------------------------------------------


async def test_index_lists_active_runs(site: RunningSite,
                                       client: aiohttp.ClientSession) -> None:
    status, body, headers = await fetch(client, site.base + "/")

    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert f'<a href="{FLOW_PATH}">{FLOW}</a>' in body
    row = re.search(r"<tr><td class=\"name\">.*?</tr>", body, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)
    assert cells[1:] == ["3", "3 pending", "1", "forward", "1"]


async def test_index_without_runs(datadir: Path, client: aiohttp.ClientSession) -> None:
    async with running_site(datadir, load=False) as running:
        status, body, _ = await fetch(client, running.base + "/")

    assert status == 200
    assert "No flow is running" in body


async def test_live_page_shows_run(site: RunningSite, client: aiohttp.ClientSession) -> None:
    status, body, headers = await fetch(client, site.base + FLOW_PATH)

    assert status == 200
    assert f"<h1>Flow {FLOW}</h1>" in body
    assert f"Flow {FLOW}: 0 of 3 steps finished." in body
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in body
    for header in ("OWNER", "STATE", "DUR", "NAME", "DESCRIPTION"):
        assert f"<th>{header}</th>" in body or f">{header}</th>" in body
    assert '<td class="name" title="&lt;script&gt;alert(1)&lt;/script&gt;">prepare</td>' in body
    for entry in LEGEND:
        assert entry[2].replace("&", "&amp;") in body
    for file in web.DOWNLOADS:
        assert f'<a href="{file}">' in body
    assert '<a href="map">' in body
    assert "<code>load ops/deploy</code>" in body
    assert 'data-version="1"' in body
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


async def test_live_page_script_policy(
        site: RunningSite, client: aiohttp.ClientSession) -> None:
    _, body, headers = await fetch(client, site.base + FLOW_PATH)

    policy = headers["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([A-Za-z0-9_-]+)'", policy)
    assert nonce is not None
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert "object-src 'none'" in policy
    found = scan(body)
    assert found.scripts == [{"nonce": nonce.group(1)}]
    assert f'<style nonce="{nonce.group(1)}">' in body


async def test_flow_without_slash_redirects(site: RunningSite,
                                            client: aiohttp.ClientSession) -> None:
    status, _, headers = await fetch(client, site.base + FLOW_PATH.rstrip("/"))

    assert status == 308
    assert headers["Location"] == FLOW_PATH


async def test_unknown_flow_is_not_found(site: RunningSite,
                                         client: aiohttp.ClientSession) -> None:
    for path in ("/flows/nosuch/", "/flows/nosuch", "/flows/nosuch/digraph.svg",
                 "/flows/nosuch/events", "/flows/nosuch/fragment", "/flows/nosuch/map",
                 "/flows/ops/deploy/", "/nosuch"):
        status, body, _ = await fetch(client, site.base + path)
        assert status == 404, path
        assert "nosuch" not in body


async def test_only_get_and_head_are_allowed(site: RunningSite,
                                             client: aiohttp.ClientSession) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        async with client.request(method, site.base + FLOW_PATH) as response:
            assert response.status == 405, method
    async with client.head(site.base + FLOW_PATH + "digraph.svg") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/svg+xml"


# -- downloads --------------------------------------------------------------------------------


async def test_svg_download_parses(site: RunningSite, client: aiohttp.ClientSession) -> None:
    async with client.get(site.base + FLOW_PATH + "digraph.svg") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/svg+xml"
        assert "sandbox" in response.headers["Content-Security-Policy"]
        root = ElementTree.fromstring(await response.read())

    assert root.tag == f"{SVG}svg"
    assert svg_node(root, "wiki") is not None


async def test_png_download_is_png(site: RunningSite, client: aiohttp.ClientSession) -> None:
    async with client.get(site.base + FLOW_PATH + "digraph.png") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/png"
        data = await response.read()

    assert data.startswith(b"\x89PNG\r\n\x1a\n")


async def test_dot_and_text_downloads(site: RunningSite,
                                      client: aiohttp.ClientSession) -> None:
    status, dot, headers = await fetch(client, site.base + FLOW_PATH + "digraph.dot")
    assert status == 200
    assert headers["Content-Type"] == "text/vnd.graphviz; charset=utf-8"
    assert dot.startswith('digraph "ops/deploy" {')

    status, dump, headers = await fetch(client, site.base + FLOW_PATH + "dump.txt")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Name: wiki" in dump


async def test_calendar_download_parses(site: RunningSite,
                                        client: aiohttp.ClientSession) -> None:
    await site.say("gimme prepare")
    await site.say("start prepare")
    await site.rendered()

    async with client.get(site.base + FLOW_PATH + "calendar.ics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/calendar; charset=utf-8"
        calendar = icalendar.Calendar.from_ical(await response.read())

    events = calendar.walk("VEVENT")
    assert len(events) == 1
    assert "prepare" in str(events[0]["uid"])


async def test_download_revalidates(site: RunningSite, client: aiohttp.ClientSession) -> None:
    async with client.get(site.base + FLOW_PATH + "calendar.ics") as response:
        etag = response.headers["ETag"]
        assert response.headers["Cache-Control"] == "no-cache"
    async with client.get(site.base + FLOW_PATH + "calendar.ics",
                          headers={"If-None-Match": etag}) as response:
        assert response.status == 304


async def test_image_map_page(site: RunningSite, client: aiohttp.ClientSession) -> None:
    status, body, _ = await fetch(client, site.base + FLOW_PATH + "map")

    assert status == 200
    assert '<map name="graph">' in body
    assert '<img src="digraph.png" usemap="#graph"' in body
    assert 'href="https://wiki.example/runbook?a=1&amp;b=2"' in body
    assert f'title="{WIKI_NOTE}"' in body
    assert "javascript:" not in body


async def test_other_files_not_served(site: RunningSite,
                                                    client: aiohttp.ClientSession) -> None:
    for name in ("digraph.cmapx", "index.html", "thehat.db", "deploy.flow", "x.svg"):
        status, _, _ = await fetch(client, site.base + FLOW_PATH + name)
        assert status == 404, name


# -- hostile input ----------------------------------------------------------------------------


async def test_hostile_text_is_never_markup(site: RunningSite,
                                            client: aiohttp.ClientSession) -> None:
    await site.say("gimme prepare", user="<i>mallory</i>")
    await site.say("finish <script>alert(3)</script>", user="<i>mallory</i>")
    await site.rendered()

    _, page, _ = await fetch(client, site.base + FLOW_PATH)
    _, fragment, _ = await fetch(client, site.base + FLOW_PATH + "fragment")
    parts = json.loads(fragment)
    for markup in (page, parts["steps"], parts["graph"], parts["events"]):
        found = scan(markup)
        assert "alert" not in "".join(found.script_text)
        assert found.handlers == []
        assert not any(link.strip().lower().startswith("javascript:") for link in found.links)
        assert "<script>alert" not in markup
        assert "<img src=x" not in markup
        assert "<i>mallory</i>" not in markup
    assert "&lt;i&gt;mallory&lt;/i&gt;" in parts["steps"]
    assert "finish &lt;script&gt;alert(3)&lt;/script&gt;" in parts["events"]
    assert '<span class="unlinked">javascript:alert(1)</span>' in parts["steps"]


async def test_svg_download_hostile_text(site: RunningSite,
                                                    client: aiohttp.ClientSession) -> None:
    async with client.get(site.base + FLOW_PATH + "digraph.svg") as response:
        root = ElementTree.fromstring(await response.read())

    assert not [element for element in root.iter() if element.tag.endswith("script")]
    for element in root.iter():
        assert not [name for name in element.attrib if name.lower().startswith("on")]
        href = element.get(XLINK_HREF) or element.get("href") or ""
        assert not href.lower().startswith("javascript:")
    prepare = svg_node(root, "prepare")
    titles = [a.get("{http://www.w3.org/1999/xlink}title") for a in prepare.iter(f"{SVG}a")]
    assert titles == [HOSTILE_NOTE]


@pytest.mark.parametrize("target", [
    FLOW_PATH + "..%2f..%2fthehat.db",
    FLOW_PATH + "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    FLOW_PATH + "%2e%2e%2f%2e%2e%2fthehat.db",
    FLOW_PATH + "%2Fetc%2Fpasswd",
    FLOW_PATH + "%2e%2e",
    FLOW_PATH + "digraph.svg%00",
    FLOW_PATH + "digraph.svg%2f..%2f..%2fthehat.db",
    "/flows/..%2f..%2fthehat.db/digraph.svg",
    "/flows/%2e%2e/digraph.svg",
    "/flows/ops_deploy/digraph.svg",
    "/flows/" + "%2Fetc%2Fpasswd/dump.txt",
    "/flows/..%2F..%2Fetc/dump.txt",
    "/flows/%2e%2e%2f%2e%2e%2fetc/dump.txt",
    "/flows/ops%2F..%2F..%2Fthehat.db/dump.txt",
    "/flows/ops%2Fdeploy%00/dump.txt",
    "/flows/%00/dump.txt",
    FLOW_PATH + "dump.txt%00.png",
    FLOW_PATH + "%2e%2e%2fdump.txt",
    FLOW_PATH + "..%5c..%5cthehat.db",
    "/ops_deploy/digraph.svg",
    "/www/ops_deploy/digraph.svg",
    "/thehat.db",
    "/etc/passwd",
])
async def test_path_traversal_is_not_found(site: RunningSite, target: str) -> None:
    status, data = await raw_get(site.port, target)

    assert status == 404
    assert b"root:" not in data
    assert b"SQLite format" not in data


async def test_dot_segments_reach_nothing(site: RunningSite) -> None:
    # aiohttp removes dot segments before routing, so these end at the index or a 404,
    # never at a file outside the flow's directory.
    for target in ("/flows/../../../etc/passwd", FLOW_PATH + "../../../thehat.db",
                   FLOW_PATH + "./../digraph.svg"):
        status, data = await raw_get(site.port, target)
        assert status in (200, 404), target
        assert b"root:" not in data
        assert b"SQLite format" not in data
        assert b"<svg" not in data


async def test_symbolic_links_are_not_followed(site: RunningSite, tmp_path: Path,
                                               client: aiohttp.ClientSession) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n", encoding="utf-8")
    directory = site.webdir / web_key(FLOW)
    (directory / "dump.txt").unlink()
    os.symlink(secret, directory / "dump.txt")

    status, body, _ = await fetch(client, site.base + FLOW_PATH + "dump.txt")

    assert status == 404
    assert "top secret" not in body


async def test_fifo_in_render_directory_not_served(site: RunningSite,
                                                   client: aiohttp.ClientSession) -> None:
    directory = site.webdir / web_key(FLOW)
    (directory / "dump.txt").unlink()
    os.mkfifo(directory / "dump.txt")

    status, _, _ = await fetch(client, site.base + FLOW_PATH + "dump.txt")

    assert status == 404


async def test_flow_directory_link_rejected(site: RunningSite, tmp_path: Path,
                                                  client: aiohttp.ClientSession) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "dump.txt").write_text("top secret\n", encoding="utf-8")
    directory = site.webdir / web_key(FLOW)
    directory.rename(tmp_path / "moved")
    os.symlink(outside, directory)

    status, body, _ = await fetch(client, site.base + FLOW_PATH + "dump.txt")

    assert status == 404
    assert "top secret" not in body


# -- live updates -----------------------------------------------------------------------------


async def next_event(response: aiohttp.ClientResponse) -> tuple[str, str]:
    """Read one server-sent event; return its type and data. Comments are skipped."""
    kind, data = "message", ""
    while True:
        raw = await response.content.readline()
        if not raw:
            raise EOFError("the event stream ended")
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                return kind, data
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            kind = value
        elif field == "data":
            data = value


async def test_event_stream_reports_finish(site: RunningSite,
                                           client: aiohttp.ClientSession) -> None:
    async with client.get(site.base + FLOW_PATH + "events") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        kind, data = await asyncio.wait_for(next_event(response), 5)
        assert kind == "rendered"
        first = json.loads(data)["version"]

        await site.say("gimme prepare")
        await site.say("finish prepare")
        kind, data = await asyncio.wait_for(next_event(response), 10)

    assert kind == "rendered"
    assert json.loads(data)["version"] > first


async def test_fragment_follows_the_run(site: RunningSite,
                                        client: aiohttp.ClientSession) -> None:
    await site.say("gimme prepare")
    await site.say("finish prepare")
    await site.rendered()

    async with client.get(site.base + FLOW_PATH + "fragment") as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        parts = await response.json()

    assert parts["version"] == site.daemon.renderer.version(FLOW)
    assert "1 of 3 steps finished" in parts["progress"]
    assert '<td class="name" title="Read the runbook first">wiki</td>' in parts["steps"]
    assert "prepare" not in parts["steps"]
    graph = ElementTree.fromstring(parts["graph"])
    assert node_fill(graph, "prepare") == DONE
    assert "finish prepare" in parts["events"]


async def test_event_stream_heartbeat_and_gone(site: RunningSite,
                                               client: aiohttp.ClientSession,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "HEARTBEAT_SECONDS", 0.05)
    async with client.get(site.base + FLOW_PATH + "events") as response:
        await asyncio.wait_for(next_event(response), 5)
        comment = await asyncio.wait_for(response.content.readline(), 5)
        assert comment == b": heartbeat\n"

        await site.say("unload")
        kind, data = await asyncio.wait_for(next_event(response), 5)

    assert kind == "gone"
    assert json.loads(data) == {"flow": FLOW}


async def test_event_streams_bounded_and_released(site: RunningSite,
                                                      client: aiohttp.ClientSession,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "MAX_SUBSCRIBERS_PER_FLOW", 2)
    monkeypatch.setattr(web, "HEARTBEAT_SECONDS", 0.05)
    first = await client.get(site.base + FLOW_PATH + "events")
    second = await client.get(site.base + FLOW_PATH + "events")
    try:
        async with client.get(site.base + FLOW_PATH + "events") as third:
            assert third.status == 503
            assert third.headers["Retry-After"] == "30"
        assert site.site.subscriber_count(FLOW) == 2
    finally:
        first.close()
        second.close()

    for _ in range(100):
        if site.site.subscriber_count(FLOW) == 0:
            break
        await asyncio.sleep(0.05)
    assert site.site.subscriber_count(FLOW) == 0


async def test_stop_ends_open_event_streams(datadir: Path,
                                            client: aiohttp.ClientSession) -> None:
    async with running_site(datadir) as running:
        response = await client.get(running.base + FLOW_PATH + "events")
        await asyncio.wait_for(next_event(response), 5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await running.site.stop()
        assert loop.time() - started < 2
        with pytest.raises((EOFError, aiohttp.ClientError)):
            await asyncio.wait_for(next_event(response), 5)
        response.close()


# -- start-up ---------------------------------------------------------------------------------


async def test_baseurl_defaults_to_bound_address(site: RunningSite) -> None:
    assert site.daemon.baseurl == f"http://127.0.0.1:{site.port}"

    reply = await site.say("status")

    assert f"Live status: http://127.0.0.1:{site.port}/flows/ops%2Fdeploy/" in reply


async def test_site_binds_ipv6_loopback(datadir: Path,
                                        client: aiohttp.ClientSession) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback address")
    config = Config(engine=EngineConfig(datadir=datadir, bindaddr="::1", bindport=0))
    daemon = await asyncio.to_thread(open_daemon, config)
    site = web.WebSite(daemon, config)
    try:
        port = await site.start()
        assert daemon.baseurl == f"http://[::1]:{port}"
        status, _, _ = await fetch(client, f"http://[::1]:{port}/")
        assert status == 200
    finally:
        await site.stop()
        await daemon.close()


async def test_port_in_use_runs_without_site(datadir: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = Config(engine=EngineConfig(datadir=datadir, bindport=port, timezone="UTC"))
        daemon = await asyncio.to_thread(open_daemon, config)
        try:
            with caplog.at_level(logging.WARNING, logger="thehat.cli"):
                site = await cli.start_status_site(daemon, config)
            assert site is None
            assert daemon.renderer is not None
            assert f"cannot start the status web site on 127.0.0.1 port {port}" in caplog.text
            reply = await daemon.handle(MemoryConversation("tty:alice"), "alice", f"load {FLOW}")
            assert f"Loaded workflow '{FLOW}'" in reply.lines[0]
        finally:
            await daemon.close()


class IndexReader(Frontend):
    """A frontend that reads the web site's index through the daemon's base URL, then ends."""

    name = "index-reader"
    config_section = "thehat-index-reader"
    pages: ClassVar[list[tuple[int, str]]] = []

    async def serve(self) -> None:
        assert self.daemon.baseurl is not None
        async with aiohttp.ClientSession() as session:
            async with session.get(self.daemon.baseurl + "/") as response:
                self.pages.append((response.status, await response.text()))


async def test_serve_frontends_runs_the_site(datadir: Path) -> None:
    config = Config(engine=EngineConfig(datadir=datadir, bindport=0, timezone="UTC"))
    IndexReader.pages.clear()

    assert await cli.serve_frontends(config, [IndexReader]) == 0

    [(status, body)] = IndexReader.pages
    assert status == 200
    assert "thehat: active runs" in body


async def test_renderers_alone_render_without_site(datadir: Path) -> None:
    config = Config(engine=EngineConfig(datadir=datadir, renderers=("text",), timezone="UTC"))
    daemon = await asyncio.to_thread(open_daemon, config)
    try:
        assert await cli.start_status_site(daemon, config) is None
        await daemon.handle(MemoryConversation("tty:alice"), "alice", f"load {FLOW}")
        assert daemon.renderer is not None
        await asyncio.wait_for(daemon.renderer.wait_rendered(FLOW), 30)
        directory = config.engine.web_directory / web_key(FLOW)
        assert sorted(path.name for path in directory.iterdir()) == ["dump.txt"]
    finally:
        await daemon.close()


async def test_nothing_renders_by_default(datadir: Path) -> None:
    config = Config(engine=EngineConfig(datadir=datadir, timezone="UTC"))
    daemon = await asyncio.to_thread(open_daemon, config)
    try:
        assert await cli.start_status_site(daemon, config) is None
        assert daemon.renderer is None
    finally:
        await daemon.close()


async def test_recent_events_without_store(datadir: Path) -> None:
    daemon = Daemon(Config(engine=EngineConfig(datadir=datadir, timezone="UTC")), FakeClock())
    conversation = MemoryConversation("tty:alice")
    await daemon.handle(conversation, "alice", f"load {FLOW}")
    await daemon.handle(conversation, "alice", "gimme prepare")
    await daemon.handle(conversation, "alice", "finish nosuch")

    entries = await daemon.recent_history(FLOW, 2)

    assert [(e.command, e.outcome) for e in entries] == [("gimme prepare", "accepted"),
                                                         ("finish nosuch", "refused")]
    assert entries[0].result == "Owner of step prepare is now alice"


# -- thehat render ----------------------------------------------------------------------------


@pytest.fixture
def stored_run(datadir: Path, tmp_path: Path) -> Path:
    """Leave an active run of FLOW with `prepare` finished in the store; return a config."""
    config = Config(engine=EngineConfig(datadir=datadir, timezone="UTC"))
    daemon = open_daemon(config)
    for line in (f"load {FLOW}", "gimme prepare", "finish prepare"):
        daemon.execute("tty:alice", "alice", line)
    assert daemon.runs[FLOW].step("prepare").state is StepState.FINISHED
    daemon.store.close()
    daemon.lock.release()
    path = tmp_path / "thehat.yaml"
    path.write_text(yaml.safe_dump({"wfengine": {"datadir": str(datadir),
                                                  "timezone": "UTC"}}), encoding="utf-8")
    return path


def test_render_svg_of_active_run(stored_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.svg"

    assert cli.main(["render", FLOW, "-c", str(stored_run), "-o", str(output)]) == 0

    root = ElementTree.fromstring(output.read_bytes())
    assert node_fill(root, "prepare") == DONE


def test_render_png(stored_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "graph"

    assert cli.main(["render", FLOW, "-c", str(stored_run), "--format", "png",
                     "-o", str(output)]) == 0

    assert output.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_render_dot(stored_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.dot"

    assert cli.main(["render", FLOW, "-c", str(stored_run), "-o", str(output)]) == 0

    text = output.read_text(encoding="utf-8")
    assert text.startswith('digraph "ops/deploy" {')
    assert f'fillcolor="{DONE}"' in text


def test_render_text(stored_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.txt"

    assert cli.main(["render", FLOW, "-c", str(stored_run), "-o", str(output)]) == 0

    text = output.read_text(encoding="utf-8")
    assert "Steps in ops/deploy:" in text
    assert "Name: prepare" in text
    assert "State: finished" in text


def test_render_calendar(stored_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.ics"

    assert cli.main(["render", FLOW, "-c", str(stored_run), "-o", str(output)]) == 0

    calendar = icalendar.Calendar.from_ical(output.read_bytes())
    assert [str(event["uid"]).split("@")[0] for event in calendar.walk("VEVENT")] == ["prepare"]


def test_render_flow_file_to_stdout(datadir: Path,
                                    capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    path = datadir / "ops" / "deploy.flow"

    assert cli.main(["render", str(path), "--format", "txt"]) == 0

    assert b"Steps in deploy:" in capsysbinary.readouterr().out


def test_render_flow_from_data_directory(datadir: Path, tmp_path: Path) -> None:
    config = tmp_path / "thehat.yaml"
    config.write_text(yaml.safe_dump({"wfengine": {"datadir": str(datadir)}}), encoding="utf-8")
    output = tmp_path / "out.txt"

    assert cli.main(["render", FLOW, "-c", str(config), "-o", str(output)]) == 0

    assert "State: pending" in output.read_text(encoding="utf-8")


def test_render_unknown_flow_exits_2(stored_run: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "nosuch", "-c", str(stored_run), "--format", "svg"]) == 2

    assert "no active run of flow 'nosuch'" in capsys.readouterr().err


def test_render_unknown_format_exits_2(stored_run: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out.gif"

    assert cli.main(["render", FLOW, "-c", str(stored_run), "-o", str(output)]) == 2

    assert "cannot tell the output format from" in capsys.readouterr().err
    assert not output.exists()


def test_render_unwritable_output_exits_2(stored_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "missing" / "out.txt"

    assert cli.main(["render", FLOW, "-c", str(stored_run), "-o", str(output)]) == 2

    assert f"cannot write {output}" in capsys.readouterr().err


# -- protection by webauth --------------------------------------------------------------------

# Test credentials only; the assertions below never print them.
TOKEN = "test-token-" + "0123456789abcdef"
USER = "ops"
PASSWORD = "test password: correct horse"
BASIC = aiohttp.encode_basic_auth(USER, PASSWORD)
# Every route of the site, with the flow's downloads.
PROTECTED_PATHS = ("/", FLOW_PATH.rstrip("/"), FLOW_PATH, FLOW_PATH + "events",
                   FLOW_PATH + "fragment", FLOW_PATH + "map",
                   *(FLOW_PATH + file for file in web.DOWNLOADS), "/flows/nosuch/", "/nosuch")


def webauth(tmp_path: Path, **keys: str) -> WebAuth:
    return parse_webauth_section(keys, "test.yaml", tmp_path)


def secrets_in(text: str) -> list[str]:
    """Name the test credentials that occur in `text`, without repeating their values."""
    candidates = {"token": TOKEN, "password": PASSWORD, "basic header": BASIC.split()[1],
                  "cookie": webauth(Path("."), token=TOKEN).cookie_value()}
    return [name for name, value in candidates.items() if value in text]


def session_cookie(headers: aiohttp.typedefs.LooseHeaders) -> SimpleCookie:
    cookie = SimpleCookie()
    for value in headers.getall("Set-Cookie", []):  # type: ignore[union-attr]
        cookie.load(value)
    return cookie


@pytest.fixture
async def protected(datadir: Path, tmp_path: Path) -> AsyncIterator[RunningSite]:
    auth = webauth(tmp_path, token=TOKEN, user=USER, password=PASSWORD)
    async with running_site(datadir, webauth=auth) as running:
        yield running


@pytest.fixture
async def token_only(datadir: Path, tmp_path: Path) -> AsyncIterator[RunningSite]:
    async with running_site(datadir, webauth=webauth(tmp_path, token=TOKEN)) as running:
        yield running


async def test_open_site_ignores_credentials(site: RunningSite,
                                             client: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}):
        async with client.get(site.base + FLOW_PATH, headers=headers,
                              allow_redirects=False) as response:
            assert response.status == 200
            assert "Set-Cookie" not in response.headers
    status, _, _ = await fetch(client, site.base + FLOW_PATH + "?token=anything")
    assert status == 200


@pytest.mark.parametrize("path", PROTECTED_PATHS)
async def test_every_route_needs_credentials(protected: RunningSite,
                                             client: aiohttp.ClientSession, path: str) -> None:
    for method in ("GET", "HEAD"):
        async with client.request(method, protected.base + path,
                                  allow_redirects=False) as response:
            body = await response.text()
            assert response.status == 401, (method, path)
            assert response.headers["WWW-Authenticate"] == 'Basic realm="thehat"'
            assert response.headers["Cache-Control"] == "no-store"
    assert "prepare" not in body
    assert "<svg" not in body


async def test_bearer_token_opens_every_route(protected: RunningSite,
                                              client: aiohttp.ClientSession) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for path in PROTECTED_PATHS[:-2]:
        if path.endswith("events"):
            continue
        async with client.get(protected.base + path, headers=headers,
                              allow_redirects=False) as response:
            expected = 308 if path == FLOW_PATH.rstrip("/") else 200
            assert response.status == expected, path
    for path in PROTECTED_PATHS[-2:]:
        async with client.get(protected.base + path, headers=headers) as response:
            assert response.status == 404, path


async def test_wrong_bearer_token_refused(protected: RunningSite,
                                          client: aiohttp.ClientSession) -> None:
    for value in ("Bearer " + TOKEN[:-1], "Bearer " + TOKEN + "x", "Bearer", "Token " + TOKEN,
                  "Bearer " + TOKEN.upper()):
        async with client.get(protected.base + FLOW_PATH,
                              headers={"Authorization": value}) as response:
            assert response.status == 401


async def test_query_token_redirects_with_cookie(protected: RunningSite,
                                                 client: aiohttp.ClientSession) -> None:
    async with client.get(protected.base + FLOW_PATH + "?token=" + TOKEN,
                          allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == FLOW_PATH
        assert response.headers["Cache-Control"] == "no-store"
        cookie = session_cookie(response.headers)
        attributes = response.headers["Set-Cookie"]

    morsel = cookie["thehat_session"]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    assert secrets_in(attributes) == ["cookie"]

    headers = {"Cookie": f"thehat_session={morsel.value}"}
    for path in (FLOW_PATH, FLOW_PATH + "fragment", FLOW_PATH + "map", FLOW_PATH + "digraph.png",
                 "/"):
        async with client.get(protected.base + path, headers=headers) as response:
            assert response.status == 200, path
    async with client.get(protected.base + FLOW_PATH + "events", headers=headers) as response:
        assert response.status == 200
        kind, _ = await asyncio.wait_for(next_event(response), 5)
        assert kind == "rendered"


async def test_query_token_redirect_keeps_other_parameters(
        protected: RunningSite, client: aiohttp.ClientSession) -> None:
    for path, location in (("/?a=1&token=" + TOKEN + "&b=2", "/?a=1&b=2"),
                           (FLOW_PATH + "map?token=" + TOKEN, FLOW_PATH + "map"),
                           (FLOW_PATH.rstrip("/") + "?token=" + TOKEN, FLOW_PATH.rstrip("/"))):
        async with client.get(protected.base + path, allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == location


async def test_wrong_session_cookie_refused(protected: RunningSite,
                                            client: aiohttp.ClientSession) -> None:
    other = webauth(Path("."), token="another-token-0123456789").cookie_value()
    for value in (other, "", TOKEN, "0" * 64):
        async with client.get(protected.base + FLOW_PATH,
                              headers={"Cookie": f"thehat_session={value}"}) as response:
            assert response.status == 401


async def test_wrong_query_token_refused(protected: RunningSite,
                                         client: aiohttp.ClientSession) -> None:
    for path in (FLOW_PATH + "?token=" + TOKEN[:-1], FLOW_PATH + "?token=",
                 FLOW_PATH + "calendar.ics?token=nope"):
        async with client.get(protected.base + path, allow_redirects=False) as response:
            assert response.status == 401
            assert "Set-Cookie" not in response.headers


async def test_query_token_serves_calendar(protected: RunningSite,
                                           client: aiohttp.ClientSession) -> None:
    # Calendar clients keep no cookies, so a download is served at once, without a redirect.
    async with client.get(protected.base + FLOW_PATH + "calendar.ics?token=" + TOKEN,
                          allow_redirects=False) as response:
        assert response.status == 200
        assert "Set-Cookie" not in response.headers
        calendar = icalendar.Calendar.from_ical(await response.read())
    assert calendar.name == "VCALENDAR"


async def test_basic_auth_right_wrong_missing(protected: RunningSite,
                                              client: aiohttp.ClientSession) -> None:
    async with client.get(protected.base + FLOW_PATH, headers={"Authorization": BASIC}) as response:
        assert response.status == 200
        assert f"<h1>Flow {FLOW}</h1>" in await response.text()
    async with client.get(protected.base + FLOW_PATH + "calendar.ics",
                          headers={"Authorization": BASIC}) as response:
        assert response.status == 200

    wrong = [aiohttp.encode_basic_auth(USER, PASSWORD + "x"),
             aiohttp.encode_basic_auth("root", PASSWORD), aiohttp.encode_basic_auth(USER, ""),
             aiohttp.encode_basic_auth("", ""), "Basic", "Basic !!!",
             "Basic " + base64.b64encode(b"no colon").decode()]
    for header in wrong:
        async with client.get(protected.base + FLOW_PATH,
                              headers={"Authorization": header}) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Basic realm="thehat"'
    async with client.get(protected.base + FLOW_PATH) as response:
        assert response.status == 401


async def test_token_only_site_asks_for_bearer(token_only: RunningSite,
                                               client: aiohttp.ClientSession) -> None:
    async with client.get(token_only.base + FLOW_PATH,
                          headers={"Authorization": BASIC}) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="thehat"'
        assert "Bearer <token>" in await response.text()
    async with client.get(token_only.base + FLOW_PATH,
                          headers={"Authorization": f"bearer {TOKEN}"}) as response:
        assert response.status == 200


async def test_basic_only_site_ignores_query_token(datadir: Path, tmp_path: Path,
                                                  client: aiohttp.ClientSession) -> None:
    auth = webauth(tmp_path, user=USER, password=PASSWORD)
    async with running_site(datadir, webauth=auth) as running:
        async with client.get(running.base + FLOW_PATH + "?token=" + TOKEN,
                              allow_redirects=False) as response:
            assert response.status == 401
            assert "Bearer" not in await response.text()
        async with client.get(running.base + FLOW_PATH + "?token=" + TOKEN,
                              headers={"Authorization": BASIC}) as response:
            assert response.status == 200
            assert "Set-Cookie" not in response.headers


async def test_credentials_never_logged_or_shown(protected: RunningSite,
                                                 client: aiohttp.ClientSession,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = []
    requests = [(FLOW_PATH + "?token=" + TOKEN, {}), (FLOW_PATH + "?token=wrong", {}),
                (FLOW_PATH + "dump.txt?token=" + TOKEN, {}),
                (FLOW_PATH, {"Authorization": f"Bearer {TOKEN}"}),
                (FLOW_PATH + "fragment", {"Authorization": BASIC}),
                (FLOW_PATH + "map", {"Authorization": BASIC}),
                ("/", {"Authorization": BASIC})]
    for path, headers in requests:
        async with client.get(protected.base + path, headers=headers,
                              allow_redirects=False) as response:
            bodies.append(await response.text())
    reply = await protected.say("status")

    assert secrets_in(caplog.text) == []
    assert f"GET '/flows/{FLOW}/' from 127.0.0.1 -> 303" in caplog.text
    assert f"GET '/flows/{FLOW}/dump.txt' from 127.0.0.1 -> 200" in caplog.text
    assert [secrets_in(body) for body in bodies] == [[]] * len(bodies)
    assert secrets_in("\n".join(reply)) == []
    assert f"Live status: {protected.base}{FLOW_PATH}" in reply


def test_secret_value_reads_token_keys(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token.txt").write_text(TOKEN + "\n", encoding="utf-8")
    monkeypatch.setenv("THEHAT_TEST_TOKEN", TOKEN)

    for keys in ({"token": TOKEN}, {"token_env": "THEHAT_TEST_TOKEN"},
                 {"token_file": "token.txt"}):
        auth = webauth(tmp_path, **keys)
        token_read = auth.token_matches(TOKEN)
        assert token_read, sorted(keys)
        assert secrets_in(repr(auth)) == []


async def test_base64_token_with_plus_in_url(datadir: Path, tmp_path: Path,
                                             client: aiohttp.ClientSession) -> None:
    # A query string reads an unescaped `+` as a space; base64 tokens often contain `+`.
    token = "ab+cd/ef+gh=ijklmnopqrstuv=="
    async with running_site(datadir, webauth=webauth(tmp_path, token=token)) as running:
        status, _, _ = await fetch(client, running.base + FLOW_PATH + "dump.txt?token=" + token)
        assert status == 200
        status, _, _ = await fetch(client, running.base + FLOW_PATH + "dump.txt?token=ab")
        assert status == 401
