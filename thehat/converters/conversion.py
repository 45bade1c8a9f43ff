"""The result and error types of the converters, and the input checks they share."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from thehat.errors import FlowError, Problem, TheHatError
from thehat.model import Flow, StepDef

# The same limit as for a flow file: an input larger than this is rejected before parsing.
MAX_INPUT_BYTES: Final = 16 * 1024 * 1024


class ConversionError(TheHatError):
    """A file cannot be converted to a flow; the message names the file, where and why."""


@dataclass
class Conversion:
    """The flow made from an imported file, with what the import could not carry over exactly.

    Each warning is one sentence for the person who runs the import.
    """

    flow: Flow
    warnings: list[str] = field(default_factory=list)


def as_bytes(text: str | bytes, source: str, kind: str) -> bytes:
    """Return `text` as bytes (UTF-8 for a str), or raise ConversionError when it is too large."""
    if isinstance(text, str):
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ConversionError(f"{source}: the text contains a character that is not valid "
                                  f"Unicode at offset {exc.start}") from exc
    else:
        data = text
    if len(data) > MAX_INPUT_BYTES:
        raise ConversionError(f"{source}: the file is {len(data):,} bytes; the limit for a "
                              f"{kind} file is {MAX_INPUT_BYTES:,} bytes")
    return data


def build_flow(steps: Iterable[StepDef], source: str,
               locate: Callable[[Problem], str] | None = None) -> Flow:
    """Validate `steps` as a Flow, turning FlowError into ConversionError.

    `locate` returns where a problem sits in the input (such as `line 4` or `row 3`). By
    default a problem's line is given as a line of `source`.
    """
    try:
        return Flow(steps, source)
    except FlowError as exc:
        if locate is None:
            raise ConversionError(str(exc)) from exc
        lines = []
        for problem in exc.problems:
            step = f"step {problem.step!r}: " if problem.step is not None else ""
            lines.append(f"{source}: {locate(problem)}: {step}{problem.message}")
        raise ConversionError("\n".join(lines)) from exc
