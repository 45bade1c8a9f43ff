"""The `thehat import` and `thehat export` subcommands: flows from and to other formats.

`import planner|znode|csv FILE` writes a `.flow` file, by default into the data directory;
`export csv|mermaid FLOW` prints a flow in another format. The conversions themselves live in
`thehat.converters`; this module only reads and writes files and reports.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Final

from thehat.config import Config, load_config
from thehat.datadir import DataDirectory
from thehat.errors import TheHatError
from thehat.flowfile import dump_flow, load_flow, save_flow
from thehat.model import Flow

log = logging.getLogger(__name__)

IMPORT_FORMATS: Final = ("planner", "znode", "csv")
EXPORT_FORMATS: Final = ("csv", "mermaid")
# Input files larger than this are rejected before they are read.
MAX_INPUT_BYTES: Final = 16 * 1024 * 1024


def add_parsers(subcommands: argparse._SubParsersAction,  # type: ignore[type-arg]
                common: argparse.ArgumentParser) -> None:
    """Add `import` and `export` to the subcommands of the `thehat` parser."""
    importer = subcommands.add_parser(
        "import", parents=[common], help="turn a Planner, ZNode or CSV file into a flow",
        description="Convert FILE into a flow file. Without -o the flow is written into the "
                    "data directory, named after FILE (plan.planner -> plan.flow). "
                    "docs/converters.md describes how each format maps to steps.")
    importer.add_argument("format", choices=IMPORT_FORMATS, help="the format of FILE")
    importer.add_argument("file", metavar="FILE", help="the file to convert")
    importer.add_argument("-o", "--output", metavar="FLOW",
                          help="the flow file to write (default: <datadir>/<FILE's name>.flow)")
    importer.add_argument("--names", choices=("id", "slug"), default="id",
                          help="planner only: name steps task<id> (default) or after the task "
                               "names")
    importer.add_argument("--force", action="store_true",
                          help="replace the output file if it exists")
    importer.set_defaults(handler=run_import, default_log_level="WARNING")

    exporter = subcommands.add_parser(
        "export", parents=[common], help="print a flow as CSV or as a Mermaid flowchart",
        description="Convert FLOW (a flow file, or the name of a flow in the data directory) "
                    "to CSV, for a spreadsheet, or to a Mermaid flowchart, for documentation.")
    exporter.add_argument("format", choices=EXPORT_FORMATS, help="the output format")
    exporter.add_argument("flow", metavar="FLOW", help="flow file path or flow name")
    exporter.add_argument("-o", "--output", metavar="FILE", default="-",
                          help="file to write (default: standard output)")
    exporter.set_defaults(handler=run_export, default_log_level="WARNING")


def run_import(args: argparse.Namespace) -> int:
    """Run `thehat import FORMAT FILE`: write the flow and print the warnings."""
    from thehat.converters import import_csv, import_planner, import_znode

    config = load_config(args.config)
    source = Path(args.file)
    data = _read_input(source)
    if args.format == "planner":
        conversion = import_planner(data, str(source), names=args.names)
    elif args.format == "znode":
        conversion = import_znode(data, str(source))
    else:
        conversion = import_csv(_text(data, source), str(source))

    target = _import_target(args, source, config)
    if target.exists() and not args.force:
        raise TheHatError(f"{target} exists; give --force to replace it, or -o another file")
    for warning in conversion.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    _check_limits(conversion.flow, source, config)
    try:
        save_flow(conversion.flow, target)
    except OSError as exc:
        raise TheHatError(f"cannot write {target}: {exc.strerror}") from exc
    count = len(conversion.flow)
    print(f"Wrote {count} {'step' if count == 1 else 'steps'} to {target}")
    log.info("imported %s as %s (%d warnings)", source, target, len(conversion.warnings))
    return 0


def _check_limits(flow: Flow, source: Path, config: Config) -> None:
    """Raise TheHatError when `flow` has more steps or bytes than the daemon would load."""
    limits = config.limits
    steps = len(flow)
    if steps > limits.max_flow_steps:
        raise TheHatError(f"the flow made from {source} would have {steps:,} steps, more than "
                          f"the limit of {limits.max_flow_steps:,} (limits.maxFlowSteps); "
                          "nothing was written. Split the plan into several flows, or raise "
                          "limits.maxFlowSteps in the configuration.")
    size = len(dump_flow(flow).encode("utf-8"))
    if size > limits.max_flow_bytes:
        raise TheHatError(f"the flow made from {source} would be {size:,} bytes, more than the "
                          f"limit of {limits.max_flow_bytes:,} (limits.maxFlowBytes); nothing "
                          "was written. Split the plan into several flows, or raise "
                          "limits.maxFlowBytes in the configuration.")


def run_export(args: argparse.Namespace) -> int:
    """Run `thehat export FORMAT FLOW`: write the converted flow to a file or stdout."""
    from thehat.converters import export_csv, export_mermaid

    flow, name = _export_source(args)
    text = export_csv(flow) if args.format == "csv" else export_mermaid(flow, name)
    if args.output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise TheHatError(f"cannot write {args.output}: {exc.strerror}") from exc
    log.info("exported flow %s as %s to %s", name, args.format, args.output)
    return 0


def _read_input(path: Path) -> bytes:
    """Read a regular file of at most MAX_INPUT_BYTES, without trusting its reported size."""
    try:
        if not path.is_file():
            raise TheHatError(f"{path} is not a regular file; give the file to import")
        with path.open("rb") as file:
            data = file.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise TheHatError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_INPUT_BYTES:
        raise TheHatError(f"{path} is larger than {MAX_INPUT_BYTES:,} bytes, the limit")
    return data


def _text(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TheHatError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 "
                          "and try again") from exc


def _import_target(args: argparse.Namespace, source: Path, config: Config) -> Path:
    if args.output is not None:
        return Path(args.output)
    # The flow is named after the file, made a valid flow name: "my plan.planner" -> my_plan.
    name = re.sub(r"[^\w-]", "_", source.name.split(".")[0]) or "imported"
    datadir = DataDirectory(config.engine.datadir, config.limits)
    try:
        config.engine.datadir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TheHatError(f"cannot create the data directory {config.engine.datadir}: "
                          f"{exc.strerror}") from exc
    return datadir.path_for(datadir.normalize(name))


def _export_source(args: argparse.Namespace) -> tuple[Flow, str]:
    config = load_config(args.config)
    path = Path(args.flow)
    if path.is_file():
        return load_flow(path, config.limits), path.name.removesuffix(".flow")
    datadir = DataDirectory(config.engine.datadir, config.limits)
    name = datadir.normalize(args.flow)
    return datadir.read(name), name
