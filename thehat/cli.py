"""The `thehat` command: the terminal session, the chat daemon, flow validation, the version.

This is the program's entry point and the only place that configures logging or starts an
event loop. Expected errors at start-up (configuration, flow file, missing plugin) print one
message on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Final
from zoneinfo import ZoneInfo

from frontends.base import Frontend
from frontends.tty import TerminalFrontend
from thehat import __version__
from thehat.cli_convert import add_parsers as add_convert_parsers
from thehat.config import Config, load_config
from thehat.daemon import Daemon, open_daemon
from thehat.datadir import DataDirectory
from thehat.engine import Run
from thehat.errors import TheHatError
from thehat.flowfile import load_flow, validate_files
from thehat.plugins import load_frontends
from thehat.records import history_export, report_csv, report_text
from thehat.rendering import RenderService, render_views
from thehat.store import DATABASE_NAME, SqliteStore

if TYPE_CHECKING:
    from thehat.web import WebSite

log = logging.getLogger(__name__)

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_USER: Final = "operator"

# Frontend sections of the configuration file, and the extra that installs their frontend.
FRONTEND_EXTRAS: Final = {"thehat-irc": "irc", "thehat-xmpp": "xmpp"}

# Seconds `thehat run` waits for the frontends to disconnect once one of them has ended.
SHUTDOWN_TIMEOUT: Final = 10.0

# Modules that a view or the web site needs, all from the `web` extra.
VIEW_MODULES: Final = {"ical": "icalendar"}
WEB_MODULE: Final = "aiohttp"

# `thehat render --format` -> (renderer, output of render_views).
RENDER_FORMATS: Final = {
    "svg": ("digraph", "svg"),
    "png": ("digraph", "png"),
    "dot": ("digraph", "dot"),
    "txt": ("text", "text"),
    "ics": ("ical", "ical"),
}
# Seconds `thehat render` lets dot run.
RENDER_DOT_TIMEOUT: Final = 300.0

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `thehat` command with `argv` (default `sys.argv[1:]`) and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits for --help (0) and usage errors (2); return the status instead so
        # that main() can be called in-process.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    level = args.log_level or args.default_log_level
    try:
        handler = _log_handler(args.log_file)
    except OSError as exc:
        print(f"thehat: cannot open log file {args.log_file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        return args.handler(args)
    except TheHatError as exc:
        print(f"thehat: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser: one subcommand per mode, each with the common options."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", metavar="FILE",
                        help="configuration file (YAML); without it every setting has its "
                             "default")
    common.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        help="lowest level of log records to write (default WARNING, "
                             "INFO for 'run')")
    common.add_argument("--log-file", metavar="FILE",
                        help="append log records to FILE instead of writing them to stderr")

    parser = argparse.ArgumentParser(
        prog="thehat",
        description="Drive a directed graph of steps (a flow) to completion from a "
                    "terminal, IRC or XMPP.")
    parser.add_argument("--version", action="version", version=f"thehat {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tty = subcommands.add_parser(
        "tty", parents=[common], help="talk to the engine in this terminal",
        description="Talk to the engine in this terminal, or pipe commands in, one per line.")
    tty.add_argument("--user", help="identity to issue commands as (default: your login name)")
    tty.add_argument("flow", nargs="?", metavar="FLOW",
                     help="flow to open first: a .flow file, or the name of a flow in the "
                          "data directory")
    tty.set_defaults(handler=run_terminal, default_log_level="WARNING")

    run = subcommands.add_parser(
        "run", parents=[common], help="run the chat frontends enabled in the configuration",
        description="Run every frontend whose section (thehat-irc, thehat-xmpp) is in the "
                    "configuration file, until one of them ends or the process is signalled.")
    run.set_defaults(handler=run_daemon, default_log_level="INFO")

    validate = subcommands.add_parser(
        "validate", parents=[common], help="check flow files and report every problem",
        description="Check flow files; exit 0 when all are valid, 1 when any is not.")
    validate.add_argument("files", nargs="+", metavar="FILE", help="flow file to check")
    validate.set_defaults(handler=run_validate, default_log_level="WARNING")

    history = subcommands.add_parser(
        "history", parents=[common], help="export the audit history of a flow",
        description="Print every journal entry of every run of FLOW from the run store in "
                    "the data directory: who did what, where, when, and the result.")
    history.add_argument("flow", metavar="FLOW", help="flow name, as in the data directory")
    history.add_argument("--format", choices=("text", "csv", "json"), default="text",
                         help="output format (default text; json includes the events)")
    history.set_defaults(handler=run_history, default_log_level="WARNING")

    report = subcommands.add_parser(
        "report", parents=[common], help="print the change record of a flow's latest run",
        description="Print, for each step of the latest run of FLOW, the owner, planned "
                    "order, actual start and finish, duration, failure and reversion.")
    report.add_argument("flow", metavar="FLOW", help="flow name, as in the data directory")
    report.add_argument("--format", choices=("text", "csv"), default="text",
                        help="output format (default text)")
    report.set_defaults(handler=run_report, default_log_level="WARNING")

    render = subcommands.add_parser(
        "render", parents=[common], help="write a graph, text dump or calendar of a flow",
        description="Render FLOW: the active run of that name in the run store of the data "
                    "directory if there is one, else the flow of that name in the data "
                    "directory, else the flow file at that path. Every step is drawn.")
    render.add_argument("flow", metavar="FLOW", help="flow name or flow file path")
    render.add_argument("--format", choices=tuple(RENDER_FORMATS),
                        help="output format (default: the extension of the output file)")
    render.add_argument("-o", "--output", metavar="FILE", default="-",
                        help="file to write (default: standard output)")
    render.set_defaults(handler=run_render, default_log_level="WARNING")

    add_convert_parsers(subcommands, common)

    version = subcommands.add_parser("version", parents=[common], help="print the version")
    version.set_defaults(handler=run_version, default_log_level="WARNING")
    return parser


def default_user() -> str:
    """Return the login name, else `$USER`, else `operator`."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        # getpass.getuser raises KeyError (before Python 3.13) or OSError when no
        # environment variable names the user and the password database has no entry.
        name = os.environ.get("USER", "")
    return name or DEFAULT_USER


def run_terminal(args: argparse.Namespace) -> int:
    """Run `thehat tty`: one terminal session, then exit 0."""
    config = load_config(args.config)
    user = default_user() if args.user is None else args.user.strip()
    if not user:
        raise TheHatError("--user is empty; give the name to issue commands as")
    asyncio.run(_serve_terminal(config, user, args.flow))
    return EXIT_OK


async def _serve_terminal(config: Config, user: str, flow: str | None) -> None:
    daemon = await asyncio.to_thread(open_daemon, config)
    site = None
    try:
        site = await start_status_site(daemon, config)
        daemon.start_automation()
        await TerminalFrontend(daemon, config, user=user, flow=flow).serve()
    finally:
        if site is not None:
            await site.stop()
        await daemon.close()


async def start_status_site(daemon: Daemon, config: Config) -> WebSite | None:
    """Start rendering and the web site as `config` asks; return the site, if it runs.

    Views are rendered into the web directory when `wfengine.bindport` or
    `wfengine.renderers` is set, and the site runs when `wfengine.bindport` is set. When
    its address cannot be bound, a warning is logged and the daemon runs without it.
    Raises TheHatError when a library that the configuration needs is not installed.
    """
    engine = config.engine
    if not engine.renders:
        return None
    needed = [VIEW_MODULES[view] for view in engine.views if view in VIEW_MODULES]
    if engine.bindport is not None:
        needed.append(WEB_MODULE)
    missing = [module for module in needed if importlib.util.find_spec(module) is None]
    if missing:
        raise TheHatError(f"the web site and views configured in wfengine need "
                          f"{', '.join(missing)}; install the web extra: "
                          "pip install 'thehat[web]'")

    daemon.renderer = RenderService(daemon, engine.web_directory, engine.views)
    for name in list(daemon.runs):
        daemon.renderer.mark_stale(name)
    if engine.bindport is None:
        log.info("rendering %s into %s", ", ".join(engine.views) or "no views",
                 engine.web_directory)
        return None

    from thehat.web import WebSite

    site = WebSite(daemon, config)
    try:
        await site.start()
    except OSError as exc:
        log.warning("cannot start the status web site on %s port %d: %s; running without it",
                    engine.bindaddr, engine.bindport, exc)
        return None
    return site


def run_daemon(args: argparse.Namespace) -> int:
    """Run `thehat run`: every frontend enabled in the configuration, until one ends."""
    if args.config is None:
        raise TheHatError("'thehat run' needs a configuration file: thehat run -c CONFIG")
    config = load_config(args.config)
    classes = select_frontends(config, load_frontends(), args.config)
    return asyncio.run(serve_frontends(config, classes))


def select_frontends(config: Config, available: dict[str, type[Frontend]],
                     source: str) -> list[type[Frontend]]:
    """Return the frontend classes whose config section is in `config`, in section order.

    Raises TheHatError when no frontend is enabled, or when a `thehat-*` section has no
    installed frontend (naming the extra to install when it is one of ours).
    """
    by_section = {cls.config_section: cls for cls in available.values()
                  if cls.config_section is not None}
    unhandled = [section for section in config.sections
                 if section.startswith("thehat-") and section not in by_section]
    if unhandled:
        raise TheHatError("; ".join(_unhandled_message(section, source)
                                    for section in unhandled))
    enabled = [by_section[section] for section in config.sections if section in by_section]
    if not enabled:
        raise TheHatError(f"no frontend enabled in {source}: add a thehat-irc or thehat-xmpp "
                          "section, or use 'thehat tty'")
    return enabled


def _unhandled_message(section: str, source: str) -> str:
    extra = FRONTEND_EXTRAS.get(section)
    if extra is None:
        return (f"no installed frontend handles section {section!r} of {source}; install "
                "the package that provides it, or remove the section")
    return (f"section {section!r} of {source} needs the {extra} frontend, which is not "
            f"installed: pip install 'thehat[{extra}]'")


async def serve_frontends(config: Config, classes: Sequence[type[Frontend]]) -> int:
    """Serve every frontend on one daemon until one ends or SIGINT/SIGTERM arrives.

    Rendering and the status web site run beside them when the configuration asks for them
    (see `start_status_site`). At the end, stop the other frontends, wait up to
    SHUTDOWN_TIMEOUT seconds for them, stop the web site and close the daemon. Returns 0, or 1 when a frontend failed unexpectedly (logged). Re-raises the
    first TheHatError a frontend raised (for example a missing library).
    """
    daemon = await asyncio.to_thread(open_daemon, config)
    try:
        site = await start_status_site(daemon, config)
    except BaseException:
        await daemon.close()
        raise
    frontends = [cls(daemon, config) for cls in classes]
    daemon.start_automation()
    tasks = {asyncio.create_task(frontend.serve(), name=f"frontend {frontend.name}"): frontend
             for frontend in frontends}
    stop_requested = asyncio.Event()
    signals = _install_stop_signals(stop_requested)
    waiter = asyncio.create_task(stop_requested.wait(), name="stop signal")
    try:
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            log.info("stop signal received, stopping %d frontends", len(frontends))
        for task, frontend in tasks.items():
            if task in done:
                log.info("frontend %s ended, stopping the others", frontend.name)
    finally:
        waiter.cancel()
        _remove_stop_signals(signals)
        await _stop_frontends(tasks)
        if site is not None:
            await site.stop()
        await daemon.close()
    return _frontend_status(tasks)


async def _stop_frontends(tasks: dict[asyncio.Task[None], Frontend]) -> None:
    for task, frontend in tasks.items():
        if not task.done():
            await frontend.stop()
    _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT)
    for task in pending:
        log.warning("frontend %s did not stop within %.0f s, cancelling it",
                    tasks[task].name, SHUTDOWN_TIMEOUT)
        task.cancel()
    if pending:
        await asyncio.wait(pending)


def _frontend_status(tasks: dict[asyncio.Task[None], Frontend]) -> int:
    status = EXIT_OK
    for task, frontend in tasks.items():
        if task.cancelled() or task.exception() is None:
            continue
        error = task.exception()
        if isinstance(error, TheHatError):
            raise error
        log.error("frontend %s failed", frontend.name, exc_info=error)
        status = EXIT_FAILED
    return status


def _install_stop_signals(stop_requested: asyncio.Event) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop_requested.set)
        except (NotImplementedError, RuntimeError):
            # Not available on Windows event loops, nor outside the main thread.
            continue
        installed.append(signum)
    return installed


def _remove_stop_signals(signals: list[signal.Signals]) -> None:
    loop = asyncio.get_running_loop()
    for signum in signals:
        loop.remove_signal_handler(signum)


def run_validate(args: argparse.Namespace) -> int:
    """Run `thehat validate`: print every problem of the files and return 0 if there is none."""
    config = load_config(args.config)
    lines, status = validate_files(args.files, config.limits)
    for line in lines:
        print(line)
    return status


def _open_store(args: argparse.Namespace) -> tuple[Config, SqliteStore]:
    """Open the run store of the configured data directory for reading."""
    config = load_config(args.config)
    path = config.engine.datadir / DATABASE_NAME
    if not path.is_file():
        raise TheHatError(f"No run store at {path}: no flow has run with this data directory "
                          "yet (check -c/--config).")
    return config, SqliteStore(path)


def run_history(args: argparse.Namespace) -> int:
    """Run `thehat history FLOW`: print the whole journal of the flow's runs."""
    config, store = _open_store(args)
    try:
        entries = store.history(args.flow)
    finally:
        store.close()
    if not entries:
        raise TheHatError(f"No history of flow {args.flow!r} in {store.path}.")
    zone = ZoneInfo(config.engine.timezone) if config.engine.timezone else None
    sys.stdout.write(history_export(entries, args.format, zone))
    return EXIT_OK


def run_report(args: argparse.Namespace) -> int:
    """Run `thehat report FLOW`: print the change record of the flow's latest run."""
    config, store = _open_store(args)
    try:
        record = store.latest_run(args.flow)
    finally:
        store.close()
    if record is None:
        raise TheHatError(f"No run of flow {args.flow!r} in {store.path}.")
    zone = ZoneInfo(config.engine.timezone) if config.engine.timezone else None
    now = datetime.now(timezone.utc)
    render = report_csv if args.format == "csv" else report_text
    sys.stdout.write(render(record, now, zone))
    return EXIT_OK


def run_render(args: argparse.Namespace) -> int:
    """Run `thehat render FLOW`: write one view of the flow to a file or standard output."""
    config = load_config(args.config)
    form = args.format or Path(args.output).suffix.removeprefix(".").lower()
    if form not in RENDER_FORMATS:
        raise TheHatError(f"cannot tell the output format from {args.output!r}; give "
                          f"--format {'|'.join(RENDER_FORMATS)}")
    view, output = RENDER_FORMATS[form]
    module = VIEW_MODULES.get(view)
    if module is not None and importlib.util.find_spec(module) is None:
        raise TheHatError(f"--format {form} needs {module}, which is not installed: "
                          "pip install 'thehat[web]'")
    zone = ZoneInfo(config.engine.timezone) if config.engine.timezone else None
    run = _run_to_render(config, args.flow)

    if form == "dot":
        # The DOT text needs no layout, so graphviz need not be installed for it.
        from renderers.digraph import render_dot

        data = render_dot(run, zone).encode("utf-8")
    else:
        outputs = asyncio.run(render_views(run, (view,), zone, max(len(run.steps), 1),
                                           RENDER_DOT_TIMEOUT))
        data = outputs[output]

    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return EXIT_OK
    try:
        Path(args.output).write_bytes(data)
    except OSError as exc:
        raise TheHatError(f"cannot write {args.output}: {exc.strerror}") from exc
    log.info("wrote the %s of flow %s to %s", form, run.name, args.output)
    return EXIT_OK


def _run_to_render(config: Config, flow: str) -> Run:
    """Return the active run named `flow` from the run store, else a new run of the flow
    file of that name in the data directory, else of the file at path `flow`."""
    datadir = DataDirectory(config.engine.datadir, config.limits)
    try:
        name: str | None = datadir.normalize(flow)
    except TheHatError:
        name = None
    database = config.engine.datadir / DATABASE_NAME
    if name is not None and database.is_file():
        store = SqliteStore(database)
        try:
            record = store.latest_run(name, active=True)
        finally:
            store.close()
        if record is not None:
            return Run.restored(record.name, record.steps, record.failed_step,
                                source=record.source)
    if name is not None and datadir.path_for(name).is_file():
        return Run(name, datadir.read(name))
    path = Path(flow)
    if path.is_file():
        return Run(path.name.removesuffix(".flow"), load_flow(path, config.limits),
                   source=str(path.resolve()))
    raise TheHatError(f"no active run of flow {flow!r}, no flow file for it in "
                      f"{config.engine.datadir} and no file at that path; check the name "
                      "(thehat tty lists flows with ls) or -c/--config")


def run_version(args: argparse.Namespace) -> int:
    """Run `thehat version`."""
    print(f"thehat {__version__}")
    return EXIT_OK


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to whatever `sys.stderr` is when a record arrives.

    prompt_toolkit's patch_stdout replaces sys.stderr while the terminal prompt runs, so log
    records print above the prompt instead of through it.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # type: ignore[no-untyped-def]
        pass


def _log_handler(log_file: str | None) -> logging.Handler:
    handler: logging.Handler
    if log_file is not None:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler
