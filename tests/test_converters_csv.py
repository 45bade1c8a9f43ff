"""Tests of the CSV export and import of flows."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thehat.addresses import address_problem
from thehat.clocks import owner_problem
from thehat.converters import CSV_COLUMNS, ConversionError, export_csv, import_csv
from thehat.flowfile import load_flow
from thehat.model import MAX_TIMEOUT, Flow, StepDef
from thehat.names import name_problem

from tests.test_converters import run_to_end

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HEADER = ",".join(CSV_COLUMNS)


def csv_row(**cells: str) -> str:
    """Return one CSV row with `cells` in their columns, quoted where needed."""
    output = io.StringIO()
    # The writer quotes a cell that contains a line break only when the break is part of the
    # line terminator.
    csv.writer(output, lineterminator="\r\n").writerow(cells.get(column, "")
                                                       for column in CSV_COLUMNS)
    return output.getvalue().removesuffix("\r\n")


# --------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.flow")), ids=lambda path: path.name)
def test_csv_round_trip_of_examples(path: Path) -> None:
    flow = load_flow(path)

    conversion = import_csv(export_csv(flow), path.name)

    assert conversion.flow == flow
    assert conversion.warnings == []
    run_to_end(conversion.flow)


names = st.text(st.characters(categories=("Lu", "Ll", "Nd")) | st.sampled_from("_-."),
                min_size=1, max_size=10).filter(lambda name: name_problem(name) is None)
# Text of one line, and text of any lines; neither may be empty, because an empty cell means
# "no value".
line_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00\r\n"),
                    min_size=1, max_size=30)
any_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                   min_size=1, max_size=60)
commands = any_text.filter(str.strip)
owners = st.one_of(
    names, line_text.filter(lambda owner: owner_problem(owner) is None),
    st.sampled_from(["clock-stopwatch:0/0/0@0:0:30", "clock-alarm:12/5/2026@2:0:0",
                     "program:./check.sh --fast"]))
addresses = st.from_regex(r"[a-z0-9.+_'-]{1,10}@[a-z]{1,8}\.example", fullmatch=True).filter(
    lambda address: address_problem(address) is None)
timeouts = st.floats(min_value=0, max_value=MAX_TIMEOUT, exclude_min=True)


@st.composite
def flows(draw: st.DrawFn) -> Flow:
    """A random valid flow: every field may be set, gates form a DAG, file order is shuffled."""
    step_names = draw(st.lists(names, min_size=1, max_size=8, unique=True))
    steps = []
    for index, name in enumerate(step_names):
        earlier = step_names[:index]
        steps.append(StepDef(
            name,
            description=draw(st.none() | line_text),
            owner=draw(st.none() | owners),
            start_command=draw(st.none() | commands),
            notify_at_start=tuple(draw(st.lists(addresses, max_size=3))),
            finish_command=draw(st.none() | commands),
            notify_at_finish=tuple(draw(st.lists(addresses, max_size=3))),
            url=draw(st.none() | line_text),
            note=draw(st.none() | any_text),
            groups=tuple(draw(st.lists(names, max_size=3))),
            gates=tuple(draw(st.lists(st.sampled_from(earlier), unique=True))) if earlier else (),
            revert_command=draw(st.none() | commands),
            timeout=draw(st.none() | timeouts),
        ))
    return Flow(draw(st.permutations(steps)))


@settings(max_examples=100, deadline=None)
@given(flows())
def test_csv_round_trip_of_any_flow(flow: Flow) -> None:
    assert import_csv(export_csv(flow), "random.csv").flow == flow


# --------------------------------------------------------------------------------------------
# Export


def test_csv_export_layout() -> None:
    flow = Flow([
        StepDef("backup", description="Back up", owner="alice", groups=("db", "ops"),
                notify_at_start=("a@example.com", "b@example.com"), timeout=300.0,
                note="first line\nsecond, with a comma"),
        StepDef("upgrade", gates=("backup",), timeout=0.5, start_command='echo "hi"'),
    ])

    rows = list(csv.reader(io.StringIO(export_csv(flow), newline="")))

    assert rows[0] == list(CSV_COLUMNS)
    assert rows[1] == ["backup", "Back up", "alice", "db, ops", "", "",
                       "first line\nsecond, with a comma", "", "", "", "300",
                       "a@example.com, b@example.com", ""]
    assert rows[2] == ["upgrade", "", "", "", "backup", "", "", 'echo "hi"', "", "", "0.5",
                       "", ""]
    assert len(rows) == 3


def test_csv_export_uses_crlf() -> None:
    text = export_csv(Flow([StepDef("a")]))

    assert text == HEADER + "\r\na" + "," * (len(CSV_COLUMNS) - 1) + "\r\n"


# --------------------------------------------------------------------------------------------
# Import


def test_csv_import_bom_and_lf() -> None:
    text = "\ufeff" + "\n".join([HEADER, csv_row(step="a"), csv_row(step="b", gates="a")]) + "\n"

    flow = import_csv(text, "lf.csv").flow

    assert flow == Flow([StepDef("a"), StepDef("b", gates=("a",))])


def test_csv_import_columns_in_any_order() -> None:
    columns = list(reversed(CSV_COLUMNS))
    text = ",".join(columns) + "\r\n" + ",".join(
        {"step": "a", "owner": "bob"}.get(column, "") for column in columns) + "\r\n"

    assert import_csv(text, "r.csv").flow == Flow([StepDef("a", owner="bob")])


def test_csv_import_spreadsheet_padding() -> None:
    text = "\r\n".join([HEADER + ",,", csv_row(step="a") + ",,", "step,description", ",,,",
                        csv_row(step="b", gates="a, ")])

    flow = import_csv(text, "pad.csv").flow

    assert flow == Flow([StepDef("a"), StepDef("step", description="description"),
                         StepDef("b", gates=("a",))])


def test_csv_import_extra_cell_names_row() -> None:
    text = "\r\n".join([HEADER, csv_row(step="a"), csv_row(step="b") + ",surprise"])

    with pytest.raises(ConversionError) as caught:
        import_csv(text, "x.csv")

    assert str(caught.value) == ("x.csv: row 3: the row has 14 cells, but the header names 13 "
                                 "columns; the extra cells hold 'surprise'")


def test_csv_import_header_problems_named() -> None:
    header = HEADER.replace("owner", "Owner").replace(",timeout", "")

    with pytest.raises(ConversionError) as caught:
        import_csv(header + "\r\n", "h.csv")

    message = str(caught.value)
    assert message.startswith("h.csv: row 1: unknown column 'Owner'; missing columns 'owner', "
                              "'timeout'; the header row must name these columns")


def test_csv_import_duplicate_column_named() -> None:
    with pytest.raises(ConversionError, match=r"h\.csv: row 1: duplicate column 'note'"):
        import_csv(HEADER + ",note\r\n", "h.csv")


def test_csv_import_empty_file_rejected() -> None:
    with pytest.raises(ConversionError, match=r"e\.csv: the file is empty"):
        import_csv("", "e.csv")


def test_csv_import_empty_step_names_row() -> None:
    text = "\r\n".join([HEADER, csv_row(step="a"), csv_row(description="no name")])

    with pytest.raises(ConversionError) as caught:
        import_csv(text, "s.csv")

    assert str(caught.value) == "s.csv: row 3: the step cell is empty; give every step a name"


def test_csv_import_bad_timeout_names_row() -> None:
    text = "\r\n".join([HEADER, csv_row(step="a", timeout="soon")])

    with pytest.raises(ConversionError, match=r"t\.csv: row 2: timeout 'soon' is not a number"):
        import_csv(text, "t.csv")


def test_csv_import_invalid_flow_names_row() -> None:
    text = "\r\n".join([HEADER, csv_row(step="a", note="two\r\nlines"),
                        csv_row(step="b", gates="a, c")])

    with pytest.raises(ConversionError) as caught:
        import_csv(text, "g.csv")

    assert str(caught.value) == "g.csv: row 3: step 'b': gate 'c' names a missing step"


def test_csv_import_keeps_multiline_note() -> None:
    text = "\r\n".join([HEADER, csv_row(step="a", note='two\r\nlines, "quoted"')])

    step = import_csv(text, "n.csv").flow.steps["a"]

    assert step.note == 'two\r\nlines, "quoted"'
