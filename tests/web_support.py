"""A real daemon, render service and web site on 127.0.0.1, for the web site's tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from frontends.base import Conversation
from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon, open_daemon
from thehat.flowfile import save_flow
from thehat.model import Flow, StepDef
from thehat.rendering import RenderService
from thehat.web import WebSite
from thehat.webauth import WebAuth

FLOW: Final = "ops/deploy"
# The path of FLOW's live page: the `/` in the name is percent-encoded.
FLOW_PATH: Final = "/flows/ops%2Fdeploy/"
HOSTILE_NOTE: Final = "<script>alert(1)</script>"
HOSTILE_URL: Final = "javascript:alert(1)"
WIKI_NOTE: Final = "Read the runbook first"
WIKI_URL: Final = "https://wiki.example/runbook?a=1&b=2"


def deploy_flow() -> Flow:
    """Three steps in a row: one with hostile text, one with a note and a web link."""
    return Flow([
        StepDef("prepare", description="Prepare <b>the</b> hosts <img src=x onerror=alert(2)>",
                note=HOSTILE_NOTE, url=HOSTILE_URL),
        StepDef("wiki", description="Read the runbook", note=WIKI_NOTE, url=WIKI_URL,
                gates=("prepare",)),
        StepDef("ship", description="Ship it", gates=("wiki",)),
    ])


class MemoryConversation(Conversation):
    """A conversation that keeps what the daemon sends it."""

    def __init__(self, conversation_id: str) -> None:
        self.id = conversation_id
        self.medium = conversation_id.split(":")[0]
        self.received: list[str] = []

    async def send(self, lines: Sequence[str]) -> None:
        self.received.extend(lines)


@dataclass
class RunningSite:
    """The parts of a started web site that a test talks to."""

    daemon: Daemon
    site: WebSite
    port: int
    conversation: MemoryConversation
    webdir: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def say(self, text: str, user: str = "alice") -> list[str]:
        """Send a command line as `user` and return the reply lines."""
        return (await self.daemon.handle(self.conversation, user, text)).lines

    async def rendered(self, flow: str = FLOW) -> None:
        """Wait until the views of `flow` are written after the last change."""
        assert self.daemon.renderer is not None
        await asyncio.wait_for(self.daemon.renderer.wait_rendered(flow), 30)


def make_datadir(tmp_path: Path) -> Path:
    datadir = tmp_path / "data"
    (datadir / "ops").mkdir(parents=True)
    save_flow(deploy_flow(), datadir / "ops" / "deploy.flow")
    return datadir


@asynccontextmanager
async def running_site(datadir: Path, load: bool = True,
                       webauth: WebAuth | None = None) -> AsyncIterator[RunningSite]:
    """Open a daemon on `datadir` with rendering and the web site on 127.0.0.1, port 0.

    With `load`, FLOW is loaded from a terminal conversation and rendered once. `webauth`
    is the site's `webauth` section; None leaves the site open.
    """
    config = Config(engine=EngineConfig(datadir=datadir, bindaddr="127.0.0.1", bindport=0,
                                        timezone="UTC"), webauth=webauth)
    daemon = await asyncio.to_thread(open_daemon, config)
    webdir = config.engine.web_directory
    daemon.renderer = RenderService(daemon, webdir, config.engine.views)
    site = WebSite(daemon, config)
    try:
        port = await site.start()
        running = RunningSite(daemon, site, port, MemoryConversation("tty:alice"), webdir)
        daemon.register(running.conversation)
        if load:
            await running.say(f"load {FLOW}")
            await running.rendered()
        yield running
    finally:
        await site.stop()
        await daemon.close()
