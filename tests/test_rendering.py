"""The render scheduler: renders off the command path, coalesced, files replaced atomically."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from renderers.base import Renderer
from thehat import plugins, rendering
from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon, open_daemon
from thehat.flowfile import save_flow
from thehat.rendering import RenderService, web_key, write_atomically

from tests.helpers import MemoryConversation, toast_flow


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    datadir = tmp_path / "data"
    datadir.mkdir()
    save_flow(toast_flow(), datadir / "toast.flow")
    daemon = open_daemon(Config(engine=EngineConfig(datadir=datadir, timezone="UTC")))
    yield daemon
    daemon.store.close()
    daemon.lock.release()


async def test_burst_renders_at_most_twice(daemon: Daemon, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    started = []
    release = asyncio.Event()
    real = rendering.render_views

    async def slow_render(run, *arguments):
        started.append(run.step("openbread").owner)
        await release.wait()
        return await real(run, *arguments)

    monkeypatch.setattr(rendering, "render_views", slow_render)
    service = RenderService(daemon, tmp_path / "www", ("text",))
    daemon.renderer = service
    tty = MemoryConversation("tty:alice")
    daemon.register(tty)
    await daemon.handle(tty, "alice", "load toast")
    await asyncio.sleep(0)
    for owner in ("bob", "carol", "dave", "erin"):
        await daemon.handle(tty, "alice", f"giveto {owner} openbread")
    release.set()
    await service.wait_rendered("toast")

    # One render was in flight when the burst came; the burst was coalesced into one more,
    # which saw the last state.
    assert started == [None, "erin"]
    assert service.version("toast") == 2
    text = service.path("toast", "text").read_text(encoding="utf-8")
    assert "Owner: erin" in text


async def test_reply_does_not_wait_for_render(daemon: Daemon, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = asyncio.Event()

    async def stuck_render(run, *arguments):
        await blocked.wait()
        return {}

    monkeypatch.setattr(rendering, "render_views", stuck_render)
    daemon.renderer = RenderService(daemon, tmp_path / "www", ("text",))
    tty = MemoryConversation("tty:alice")
    daemon.register(tty)
    await daemon.handle(tty, "alice", "load toast")
    reply = await asyncio.wait_for(daemon.handle(tty, "alice", "gimme openbread"), 5)
    assert "Owner of step openbread is now alice" in reply.lines
    await daemon.renderer.close()


async def test_render_writes_views_and_tells_listeners(daemon: Daemon, tmp_path: Path) -> None:
    service = RenderService(daemon, tmp_path / "www", ("text",))
    daemon.renderer = service
    told = []

    async def listener(flow: str, version: int) -> None:
        told.append((flow, version))

    service.listeners.append(listener)
    tty = MemoryConversation("tty:alice")
    daemon.register(tty)
    await daemon.handle(tty, "alice", "load toast")
    await service.wait_rendered("toast")
    assert told == [("toast", 1)]
    assert service.path("toast", "text") == tmp_path / "www" / "toast" / "dump.txt"
    assert service.path("toast", "text").read_text(encoding="utf-8").startswith(
        "Steps in toast:")


def test_write_atomically_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "view.svg"
    target.write_bytes(b"old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["view.svg"]


def test_web_key_never_leaves_directory() -> None:
    for name in ("..", ".", "../x", "a/../../b", "/etc/passwd"):
        key = web_key(name)
        assert "/" not in key
        assert key not in (".", "..")


class ShoutRenderer(Renderer):
    """A renderer as a third-party package would register it."""

    name = "shout"
    suffix = ".shout"
    media_type = "text/plain"

    def render(self, run, zone=None) -> bytes:
        return f"FLOW {run.name.upper()} HAS {len(run.steps)} STEPS".encode()


async def test_registered_renderer_is_rendered(daemon: Daemon, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "load_renderers", lambda: {"shout": ShoutRenderer})
    service = RenderService(daemon, tmp_path / "www", ("text", "shout"))
    daemon.renderer = service
    tty = MemoryConversation("tty:alice")
    daemon.register(tty)
    await daemon.handle(tty, "alice", "load toast")
    await service.wait_rendered("toast")
    assert service.path("toast", "shout") == tmp_path / "www" / "toast" / "shout.shout"
    assert service.path("toast", "shout").read_text() == "FLOW TOAST HAS 8 STEPS"
