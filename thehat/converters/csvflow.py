"""Write a flow as CSV for spreadsheets, and read such a file back.

One row per step, in flow order, after a header row of `CSV_COLUMNS`. Lists (groups, gates,
mail recipients) are joined with ", ". Step and group names and mail addresses never contain
a comma or a space, so splitting them again gives the same items. Text may span lines, which
CSV quoting keeps. An empty cell means "no value", as an empty value does in a flow file, so
an empty text is read back as None. Apart from that, `import_csv(export_csv(flow))` equals
`flow`.
"""

from __future__ import annotations

import csv
import io
from typing import Final

from thehat.converters.conversion import Conversion, ConversionError, build_flow
from thehat.errors import Problem
from thehat.model import Flow, StepDef

CSV_COLUMNS: Final = ("step", "description", "owner", "groups", "gates", "url", "note",
                      "startCommand", "finishCommand", "revertCommand", "timeout",
                      "notifyAtStart", "notifyAtFinish")
# Column -> StepDef attribute, for the columns that hold one text.
_TEXT_COLUMNS: Final = {
    "description": "description",
    "owner": "owner",
    "url": "url",
    "note": "note",
    "startCommand": "start_command",
    "finishCommand": "finish_command",
    "revertCommand": "revert_command",
}
_LIST_COLUMNS: Final = {
    "groups": "groups",
    "gates": "gates",
    "notifyAtStart": "notify_at_start",
    "notifyAtFinish": "notify_at_finish",
}


def export_csv(flow: Flow) -> str:
    """Return `flow` as CSV text with `\\r\\n` line ends (RFC 4180) and a header row."""
    output = io.StringIO(newline="")
    writer = csv.writer(output)
    writer.writerow(CSV_COLUMNS)
    for step in flow:
        cells: dict[str, str] = {"step": step.name}
        for column, attribute in _TEXT_COLUMNS.items():
            cells[column] = getattr(step, attribute) or ""
        for column, attribute in _LIST_COLUMNS.items():
            cells[column] = ", ".join(getattr(step, attribute))
        cells["timeout"] = _seconds_text(step.timeout)
        writer.writerow([cells[column] for column in CSV_COLUMNS])
    return output.getvalue()


def _seconds_text(seconds: float | None) -> str:
    """Return seconds as the shortest text that float() reads back as the same number.

    >>> _seconds_text(None), _seconds_text(300.0), _seconds_text(0.1)
    ('', '300', '0.1')
    """
    if seconds is None:
        return ""
    return str(int(seconds)) if seconds.is_integer() else repr(seconds)


def import_csv(text: str, source: str) -> Conversion:
    """Read CSV text in the layout of `export_csv` (read from `source`) as a flow.

    The header row must name every column of `CSV_COLUMNS` once, in any order. Empty header
    cells after them, which spreadsheets add, are allowed if their cells are empty too. A
    leading byte order mark and `\\r\\n` or `\\n` line ends are accepted, and rows with no
    text at all are skipped. Raises ConversionError naming `source` and the row number for
    anything else, such as a missing step name, a timeout that is not a number, and a flow that
    is invalid.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise ConversionError(f"{source}: the file is empty; the first row must name the "
                                  "columns: " + ", ".join(CSV_COLUMNS))
        columns = _read_header(header, source)

        steps = []
        # Data rows are numbered as a spreadsheet shows them, the header being row 1.
        for row_number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            steps.append(_read_row(row, row_number, columns, source))
    except csv.Error as exc:
        raise ConversionError(f"{source}: line {reader.line_num}: invalid CSV: {exc}") from exc

    return Conversion(build_flow(steps, source, _locate_row), [])


def _locate_row(problem: Problem) -> str:
    return "the rows" if problem.line is None else f"row {problem.line}"


def _read_header(header: list[str], source: str) -> dict[str, int]:
    """Return the position of each column by name."""
    while header and not header[-1].strip():
        header = header[:-1]
    positions: dict[str, int] = {}
    unknown = []
    duplicate = []
    for position, name in enumerate(header):
        if name not in CSV_COLUMNS:
            unknown.append(name)
        elif name in positions:
            duplicate.append(name)
        else:
            positions[name] = position
    missing = [name for name in CSV_COLUMNS if name not in positions]

    problems = []
    if unknown:
        problems.append("unknown " + _columns(unknown))
    if duplicate:
        problems.append("duplicate " + _columns(duplicate))
    if missing:
        problems.append("missing " + _columns(missing))
    if problems:
        raise ConversionError(f"{source}: row 1: {'; '.join(problems)}; the header row must "
                              "name these columns (case matters): " + ", ".join(CSV_COLUMNS))
    return positions


def _columns(names: list[str]) -> str:
    return ("column " if len(names) == 1 else "columns ") + ", ".join(repr(n) for n in names)


def _read_row(row: list[str], row_number: int, columns: dict[str, int],
              source: str) -> StepDef:
    def fail(message: str) -> ConversionError:
        return ConversionError(f"{source}: row {row_number}: {message}")

    extra = [cell for cell in row[len(columns):] if cell.strip()]
    if extra:
        raise fail(f"the row has {len(row)} cells, but the header names {len(columns)} "
                   f"columns; the extra cells hold {extra[0]!r}")
    def cell(column: str) -> str:
        # Spreadsheets leave out empty cells at the end of a row.
        position = columns[column]
        return row[position] if position < len(row) else ""

    name = cell("step")
    if not name:
        raise fail("the step cell is empty; give every step a name")
    arguments: dict[str, object] = {}
    for column, attribute in _TEXT_COLUMNS.items():
        arguments[attribute] = cell(column) or None
    for column, attribute in _LIST_COLUMNS.items():
        arguments[attribute] = tuple(item.strip() for item in cell(column).split(",")
                                     if item.strip())
    timeout = cell("timeout").strip()
    if timeout:
        try:
            arguments["timeout"] = float(timeout)
        except ValueError:
            raise fail(f"timeout {timeout!r} is not a number; give the seconds, such as "
                       "300") from None
    return StepDef(name, line=row_number, **arguments)  # type: ignore[arg-type]
