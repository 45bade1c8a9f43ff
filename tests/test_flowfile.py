"""Tests of reading, checking and writing `.flow` files."""

from __future__ import annotations

import os
import random
import re
import stat
from unittest import mock

import pytest
import yaml

from thehat import flowfile, model
from thehat.errors import FlowError, TheHatError
from thehat.limits import HARD_MAX_FLOW_BYTES, Limits
from thehat.flowfile import (FlowSaveError, dump_flow, load_flow, parse_flow, save_flow,
                             validate_files)
from thehat.model import Flow, StepDef

# A flow in the layout the original Ruby TheHat writes: trailing spaces after empty values,
# block lists under `group:`, `[]` for empty lists and recipients as a comma-separated text.
TEA_FLOW = """\
---
- step: boilwater
  description: Boil a kettle of water
  owner: 
  startCommand: 
  notifyAtStart: []
  finishCommand: 
  notifyAtFinish: []
  url: 
  note: 
  group:
  - kitchen
  gates:
  - fillkettle
- step: fillkettle
  description: Fill the kettle at the tap
  owner:
  startCommand: 
  notifyAtStart: cook@example.org,host@example.org
  finishCommand: 
  notifyAtFinish: []
  url: http://example.org/kettle
  note: 
  group: []
  gates: []
- step: brew
  description: Pour water over the tea leaves
  owner: clock-alarm:3/2/2014@12:12:00
  startCommand: 
  notifyAtStart: []
  finishCommand: 
  notifyAtFinish: []
  url: 
  note: 
  group:
  - kitchen
  - tea
  gates:
  - boilwater
"""


def flow_error(text: str, source: str = "bad.flow") -> str:
    """Parse `text`, expect a FlowError and return its message."""
    with pytest.raises(FlowError) as info:
        parse_flow(text, source)
    return str(info.value)


def step(name: str, **fields: object) -> StepDef:
    return StepDef(name=name, **fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Valid files


def test_original_layout_loads() -> None:
    flow = parse_flow(TEA_FLOW, "tea.flow")

    assert list(flow.steps) == ["boilwater", "fillkettle", "brew"]
    boil = flow.steps["boilwater"]
    assert boil.owner is None
    assert boil.start_command is None
    assert boil.groups == ("kitchen",)
    assert boil.gates == ("fillkettle",)
    assert boil.line == 2
    fill = flow.steps["fillkettle"]
    assert fill.notify_at_start == ("cook@example.org", "host@example.org")
    assert fill.url == "http://example.org/kettle"
    assert fill.gates == ()
    assert flow.steps["brew"].owner == "clock-alarm:3/2/2014@12:12:00"
    assert flow.steps["brew"].groups == ("kitchen", "tea")


def test_step_order_is_file_order() -> None:
    text = "- step: zeta\n- step: alpha\n  gates: [zeta]\n- step: mid\n"

    assert list(parse_flow(text, "order.flow").steps) == ["zeta", "alpha", "mid"]


def test_empty_list_is_flow() -> None:
    flow = parse_flow("--- []\n", "empty.flow")

    assert len(flow) == 0
    assert dump_flow(flow) == "--- []\n"


@pytest.mark.parametrize("word", ["no", "yes", "on", "off", "true", "False", "1.10", "010",
                                  "0x1F", "1e3", "1_000", "-1", ".inf", "0o17", "y"])
def test_scalars_stay_text_names(word: str) -> None:
    text = f"- step: {word}\n  group: [{word}]\n- step: other\n  gates:\n  - {word}\n"

    flow = parse_flow(text, "words.flow")

    assert list(flow.steps) == [word, "other"]
    assert flow.steps[word].groups == (word,)
    assert flow.steps["other"].gates == (word,)


@pytest.mark.parametrize("word", ["no", "On", "TRUE", "1.10", "010", "12:30", "0x1F", "1e3",
                                  "2014-03-02", "1,000", ":symbol", "=", "<<", ".NaN", "+1"])
def test_scalars_stay_text_values(word: str) -> None:
    text = f"- step: a\n  owner: {word}\n  note: {word}\n"

    stepdef = parse_flow(text, "words.flow").steps["a"]

    assert stepdef.owner == word
    assert stepdef.note == word


def test_quoted_null_is_text() -> None:
    text = ("- step: a\n  owner: 'null'\n  note: \"~\"\n  url: 'NULL'\n"
            "- step: b\n  owner: ~\n  note: null\n  url: NULL\n  description: Null\n"
            "  startCommand: ''\n")

    flow = parse_flow(text, "nulls.flow")

    assert (flow.steps["a"].owner, flow.steps["a"].note, flow.steps["a"].url) == (
        "null", "~", "NULL")
    absent = flow.steps["b"]
    assert (absent.owner, absent.note, absent.url, absent.description) == (None,) * 4
    assert absent.start_command is None


def test_recipient_forms() -> None:
    text = ("- step: comma\n  notifyAtStart: ' a@x.org, b@y.org,,c@z.org '\n"
            "- step: flowlist\n  notifyAtStart: [a@x.org, ' b@y.org ']\n"
            "- step: blocklist\n  notifyAtFinish:\n  - a@x.org\n  - b@y.org\n"
            "- step: none\n  notifyAtStart:\n  notifyAtFinish: []\n")

    flow = parse_flow(text, "mail.flow")

    assert flow.steps["comma"].notify_at_start == ("a@x.org", "b@y.org", "c@z.org")
    assert flow.steps["flowlist"].notify_at_start == ("a@x.org", "b@y.org")
    assert flow.steps["blocklist"].notify_at_finish == ("a@x.org", "b@y.org")
    assert flow.steps["none"].notify_at_start == ()
    assert flow.steps["none"].notify_at_finish == ()


def test_recipients_saved_as_comma_text() -> None:
    flow = Flow([step("a", notify_at_start=("a@x.org", "b@y.org"),
                      notify_at_finish=("c@z.org",))])

    text = dump_flow(flow)

    assert "  notifyAtStart: a@x.org,b@y.org\n" in text
    assert "  notifyAtFinish: c@z.org\n" in text
    assert yaml.safe_load(text)[0]["notifyAtStart"] == "a@x.org,b@y.org"
    assert parse_flow(text, "mail.flow") == flow


def test_null_name_lists_empty() -> None:
    flow = parse_flow("- step: a\n  group:\n  gates: ~\n", "lists.flow")

    assert flow.steps["a"].groups == ()
    assert flow.steps["a"].gates == ()


def test_aliases_within_budget_load() -> None:
    text = "- step: a\n  group: &hw [hardware, food]\n- step: b\n  group: *hw\n"

    flow = parse_flow(text, "alias.flow")

    assert flow.steps["b"].groups == ("hardware", "food")


# --------------------------------------------------------------------------------------------
# Invalid files: one test per kind of problem


def test_tab_indentation_rejected() -> None:
    message = flow_error("- step: a\n\towner: b\n- step: b\n  \tnote: x\n")

    assert "bad.flow:2: tab character in indentation; indent with spaces" in message
    assert "bad.flow:4: tab character in indentation; indent with spaces" in message


def test_tab_in_block_note_allowed() -> None:
    flow = parse_flow("- step: a\n  note: |\n    make:\n    \tcc -o x x.c\n", "tab.flow")

    assert flow.steps["a"].note == "make:\n\tcc -o x x.c\n"


def test_tab_separator_rejected() -> None:
    message = flow_error("- step: a\n  owner:\tb\n")

    assert "bad.flow:2: tab character between tokens" in message


@pytest.mark.parametrize("text", ["", "# only\n# comments\n", "---\n", "\n\n"])
def test_empty_file_rejected(text: str) -> None:
    message = flow_error(text)

    assert message.startswith("bad.flow: the file is empty")
    assert "'--- []'" in message


def test_second_document_rejected() -> None:
    message = flow_error("- step: a\n---\n- step: b\n")

    assert "bad.flow:2: a second YAML document starts here" in message


def test_top_level_mapping_rejected() -> None:
    message = flow_error("\nstep: a\nowner: b\n")

    assert "bad.flow:2: the top level is a mapping; a flow file is a YAML list" in message


def test_step_not_mapping_rejected() -> None:
    message = flow_error("- step: a\n- just text\n- [x]\n-\n")

    assert "bad.flow:2: a step must be a mapping" in message
    assert "found text 'just text'" in message
    assert "bad.flow:3: a step must be a mapping of keys such as 'step: <name>', found a list" \
        in message
    assert "bad.flow:4: a step must be a mapping of keys such as 'step: <name>', found an " \
        "empty value" in message


def test_duplicate_key_names_lines() -> None:
    message = flow_error("- step: a\n  owner: x\n  note: y\n  owner: z\n")

    assert "bad.flow:4: step 'a': duplicate key 'owner' (also on line 2)" in message


def test_duplicate_step_line() -> None:
    message = flow_error("- step: a\n- step: b\n- owner: x\n  step: a\n")

    assert "bad.flow:3: step 'a': duplicate step name 'a' (first defined on line 1)" in message


def test_unknown_key_suggests_known() -> None:
    message = flow_error("- step: a\n  gate: [b]\n  frobnicate: 1\n  <<: {owner: x}\n")

    assert "bad.flow:2: step 'a': unknown key 'gate' (did you mean 'gates'?)" in message
    assert "bad.flow:3: step 'a': unknown key 'frobnicate'; remove it or use one of: step," \
        in message
    assert "bad.flow:4: step 'a': merge keys ('<<') are not supported" in message


def test_missing_step_rejected() -> None:
    message = flow_error("- owner: x\n- step:\n- step: ''\n- step: [a]\n")

    assert "bad.flow:1: missing key 'step'; add 'step: <name>'" in message
    assert "bad.flow:2: empty step name" in message
    assert "bad.flow:3: empty step name" in message
    assert "bad.flow:4: key 'step' must be a name, found a list" in message


def test_invalid_names_rejected() -> None:
    message = flow_error("- step: ok\n- step: pre check\n  group: [a/b]\n  gates: [ok]\n")

    assert "bad.flow:2: step 'pre check': invalid step name 'pre check': ' ' (U+0020)" \
        in message
    assert "bad.flow:2: step 'pre check': invalid group name 'a/b': '/' (U+002F)" in message


def test_gate_missing_step_suggests() -> None:
    message = flow_error("- step: toastbread\n- step: butter\n  gates: [toastbraed]\n")

    assert ("bad.flow:2: step 'butter': gate 'toastbraed' names a missing step "
            "(did you mean 'toastbread'?)") in message


def test_self_gate_rejected() -> None:
    message = flow_error("- step: a\n- step: b\n  gates: [a, b]\n")

    assert "bad.flow:2: step 'b': gates on itself ('b')" in message


def test_cycle_prints_path() -> None:
    message = flow_error("- step: a\n  gates: [c]\n- step: b\n  gates: [a]\n"
                         "- step: c\n  gates: [b]\n")

    assert "bad.flow:1: step 'a': gates form a cycle: a -> c -> b -> a" in message


def test_graph_checked_despite_names() -> None:
    message = flow_error("- step: bad name\n- step: b\n  gates: [nope]\n")

    assert "invalid step name 'bad name'" in message
    assert "bad.flow:2: step 'b': gate 'nope' names a missing step" in message


def test_text_key_types_rejected() -> None:
    message = flow_error("- step: a\n  note: [x, y]\n  owner:\n    who: b\n")

    assert "bad.flow:2: step 'a': key 'note' must be text, found a list" in message
    assert "bad.flow:4: step 'a': key 'owner' must be text, found a mapping" in message


def test_name_list_text_rejected() -> None:
    message = flow_error("- step: a\n  group: food, hardware\n  gates: {x: y}\n")

    assert ("bad.flow:2: step 'a': key 'group' must be a list, found text 'food, hardware'; "
            "write 'group: [food, hardware]'") in message
    assert "bad.flow:3: step 'a': key 'gates' must be a list, found a mapping" in message


def test_list_items_checked() -> None:
    message = flow_error("- step: a\n  gates:\n  -\n  - [x]\n  notifyAtStart: [a@x, {b: c}]\n")

    assert "bad.flow:3: step 'a': item 1 of 'gates' is empty" in message
    assert "bad.flow:4: step 'a': item 2 of 'gates' must be a name, found a list" in message
    assert "bad.flow:5: step 'a': item 2 of 'notifyAtStart' must be an address" in message


def test_recipient_mapping_rejected() -> None:
    message = flow_error("- step: a\n  notifyAtFinish: {to: a@x}\n")

    assert "bad.flow:2: step 'a': key 'notifyAtFinish' must be addresses separated by commas" \
        in message


def test_non_text_keys_rejected() -> None:
    message = flow_error("- step: a\n  ? [x]\n  : y\n  ~: z\n")

    assert "bad.flow:2: step 'a': a key must be text, found a list" in message
    assert "bad.flow:4: step 'a': a key must be text, found an empty value" in message


def test_object_tags_rejected() -> None:
    message = flow_error("- step: a\n  owner: !!python/object/apply:os.system [ls]\n"
                         "  note: !ruby/object:Foo y\n  url: !!int 3\n")

    assert "bad.flow:2: tag '!!python/object/apply:os.system' is not allowed" in message
    assert "bad.flow:3: tag '!ruby/object:Foo' is not allowed" in message
    assert "bad.flow:4: tag '!!int' is not allowed" in message


def test_syntax_error_has_line() -> None:
    message = flow_error("- step: a\n  owner: b: c\n")

    assert message == ("bad.flow:2: invalid YAML: mapping values are not allowed here; "
                       "check the indentation and quoting")


def test_unclosed_quote_names_start() -> None:
    message = flow_error("- step: a\n  owner: 'x\n")

    assert "bad.flow:3: invalid YAML: found unexpected end of stream" in message
    assert "quoted scalar that starts on line 2" in message


def test_control_character_rejected() -> None:
    message = flow_error("- step: a\n- step: b\x00\n")

    assert "bad.flow:2: character U+0000 is not allowed in YAML text" in message


def test_alias_errors_rejected() -> None:
    undefined = flow_error("- step: a\n  owner: *who\n")
    duplicate = flow_error("- &s {step: a}\n- &s {step: b}\n")

    assert "bad.flow:2: alias '*who' names no anchor" in undefined
    assert "bad.flow:2: anchor '&s' is defined twice (first on line 1)" in duplicate


def test_recursive_alias_rejected() -> None:
    message = flow_error("- step: a\n  gates: &g [x, *g]\n")

    assert "bad.flow:2: alias '*g' refers to the node that contains it" in message


def test_deep_nesting_rejected() -> None:
    message = flow_error("- step: a\n  note: " + "[" * 5000 + "]" * 5000 + "\n")

    assert "bad.flow:2: YAML nesting is deeper than 32 levels" in message


def test_alias_bomb_fast() -> None:
    lines = ["- step: a", "  note: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 10):
        aliases = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"  x{level}: &a{level} [{aliases}]")
    message = flow_error("\n".join(lines) + "\n")

    assert re.search(r"^bad\.flow:1: YAML aliases expand to more than 1\d{5} nodes; the file "
                     r"is not a flow", message)


def test_alias_fan_out_rejected() -> None:
    names = ", ".join(f"s{i}" for i in range(1000))
    lines = ["- step: s0", f"  group: &g [{names}]"]
    lines += [f"- step: t{i}\n  group: *g" for i in range(200)]
    message = flow_error("\n".join(lines) + "\n")

    assert "YAML aliases expand to more than" in message


def test_long_list_not_bomb(monkeypatch) -> None:
    # Without aliases a file may hold any number of nodes on few lines.
    monkeypatch.setattr(flowfile, "MIN_NODE_BUDGET", 100)
    names = ", ".join(f"g{i}" for i in range(1000))

    flow = parse_flow(f"- step: a\n  group: [{names}]\n", "long.flow")

    assert len(flow.steps["a"].groups) == 1000


def test_all_problems_sorted() -> None:
    with pytest.raises(FlowError) as info:
        parse_flow("- step: a\n  gate: [b]\n- step: a\n- owner: x\n  note: [y]\n", "bad.flow")

    lines = [problem.line for problem in info.value.problems]
    assert lines == [2, 3, 4, 5]
    assert info.value.source == "bad.flow"


# --------------------------------------------------------------------------------------------
# Files on disk


def test_load_missing_file(tmp_path) -> None:
    path = tmp_path / "gone.flow"

    with pytest.raises(FlowError) as info:
        load_flow(path)

    assert str(info.value) == (f"{path}: cannot read the file: No such file or "
                               "directory; check the path and its permissions")


def test_load_directory_rejected(tmp_path) -> None:
    with pytest.raises(FlowError) as info:
        load_flow(tmp_path)

    assert f"{tmp_path}: not a regular file; a flow is a YAML text file" in str(info.value)


def test_load_fifo_rejected_at_once(tmp_path) -> None:
    fifo = tmp_path / "pipe.flow"
    os.mkfifo(fifo)
    with pytest.raises(FlowError) as info:
        load_flow(fifo)

    assert f"{fifo}: not a regular file" in str(info.value)


def test_missing_gate_suggestions_capped(monkeypatch) -> None:
    # Each suggestion compares a name with every step name, so unbounded suggestions made
    # a file with thousands of missing gates take minutes.
    calls = []
    real = model.did_you_mean
    monkeypatch.setattr(model, "did_you_mean", lambda *a: calls.append(a) or real(*a))
    text = "".join(f"- step: m{i}\n  gates:\n  - m{i}x\n" for i in range(2_000))
    with pytest.raises(FlowError) as info:
        parse_flow(text, "missing.flow")

    assert len(info.value.problems) == 2_000
    assert len(calls) == model.MAX_SUGGESTIONS
    assert "(did you mean" in info.value.problems[0].message


def test_load_invalid_utf8(tmp_path) -> None:
    path = tmp_path / "latin.flow"
    path.write_bytes(b"- step: a\n  note: caf\xe9\n")

    with pytest.raises(FlowError) as info:
        load_flow(path)

    message = str(info.value)
    assert f"{path}:2: invalid UTF-8: byte 0xe9 at offset 21 (invalid continuation byte)" \
        in message


def test_load_too_large(tmp_path) -> None:
    path = tmp_path / "big.flow"
    path.write_text("- step: a\n- step: b\n")

    with pytest.raises(FlowError) as info:
        load_flow(path, Limits(max_flow_bytes=10))

    assert str(info.value) == (
        f"{path}: the file is 20 bytes, more than the limit of 10 bytes "
        "(limits.maxFlowBytes); split the flow, or raise limits.maxFlowBytes in the "
        "configuration")


def test_load_at_byte_limit(tmp_path) -> None:
    path = tmp_path / "exact.flow"
    path.write_text("- step: a\n- step: b\n")

    assert len(load_flow(path, Limits(max_flow_bytes=20))) == 2


def test_load_over_hard_byte_limit(tmp_path) -> None:
    path = tmp_path / "huge.flow"
    with path.open("wb") as file:
        file.truncate(HARD_MAX_FLOW_BYTES + 1)

    for limits in (None, Limits()):
        with pytest.raises(FlowError) as info:
            load_flow(path, limits)
        message = str(info.value)
        assert f"the file is {HARD_MAX_FLOW_BYTES + 1:,} bytes" in message
        assert f"the limit of {HARD_MAX_FLOW_BYTES:,} bytes (limits.maxFlowBytes)" in message
        assert "is the most that limits.maxFlowBytes allows" in message


def test_byte_limit_above_hard_cap_ignored(tmp_path) -> None:
    path = tmp_path / "huge.flow"
    with path.open("wb") as file:
        file.truncate(HARD_MAX_FLOW_BYTES + 1)
    limits = Limits(max_flow_bytes=HARD_MAX_FLOW_BYTES * 2)

    with pytest.raises(FlowError, match="limits.maxFlowBytes"):
        load_flow(path, limits)


def test_flowfile_uses_limits_byte_cap() -> None:
    assert not hasattr(flowfile, "MAX_FILE_BYTES")
    assert Limits().max_flow_bytes == HARD_MAX_FLOW_BYTES


def test_load_too_many_steps(tmp_path) -> None:
    path = tmp_path / "long.flow"
    path.write_text("".join(f"- step: s{number}\n" for number in range(5)))

    with pytest.raises(FlowError) as info:
        load_flow(path, Limits(max_flow_steps=3))

    assert str(info.value) == (
        f"{path}:4: the flow has more than 3 steps, the limit (limits.maxFlowSteps), and "
        "step 4 starts here; split the flow, or raise limits.maxFlowSteps in the "
        "configuration")


def test_load_at_step_limit(tmp_path) -> None:
    path = tmp_path / "long.flow"
    path.write_text(TEA_FLOW)

    assert len(load_flow(path, Limits(max_flow_steps=3))) == 3
    assert len(load_flow(path)) == 3


@pytest.mark.parametrize("text", [
    # The plain layout that thehat writes, read by the fast reader.
    "- step: a\n- step: b\n- step: c\n  gates: [\n",
    # Flow-style steps, read by PyYAML.
    "- {step: a}\n- {step: b}\n- {step: c}\n- {step: [\n",
])
def test_step_limit_stops_reading_early(text) -> None:
    # The syntax error after the third step is never reached.
    with pytest.raises(FlowError) as info:
        parse_flow(text, "long.flow", max_steps=2)

    problems = info.value.problems
    assert len(problems) == 1
    assert problems[0].line == 3
    assert problems[0].message.startswith("the flow has more than 2 steps, the limit "
                                          "(limits.maxFlowSteps)")


def test_step_limit_counts_steps_on_one_line() -> None:
    with pytest.raises(FlowError) as info:
        parse_flow("[{step: a}, {step: b}, {step: c}]\n", "line.flow", max_steps=1)

    assert str(info.value) == (
        "line.flow:1: the flow has more than 1 steps, the limit (limits.maxFlowSteps), and "
        "step 2 starts here; split the flow, or raise limits.maxFlowSteps in the configuration")


def test_validate_applies_limits(tmp_path) -> None:
    path = tmp_path / "tea.flow"
    path.write_text(TEA_FLOW)

    lines, status = validate_files([str(path)], Limits(max_flow_steps=2))

    assert status == 1
    assert lines[0].startswith(f"{path}:26: the flow has more than 2 steps")


def test_validate_reports_all(tmp_path) -> None:
    good = tmp_path / "tea.flow"
    good.write_text(TEA_FLOW)
    bad = tmp_path / "bad.flow"
    bad.write_text("- step: a\n  gate: [b]\n- step: a\n- owner: x\n  note: [y]\n"
                   "- step: c\n  gates: [d]\n")

    lines, status = validate_files([str(good), str(bad)])

    assert status == 1
    assert lines[0] == f"{good}: 3 steps, valid"
    assert lines[1:] == [
        f"{bad}:2: step 'a': unknown key 'gate' (did you mean 'gates'?)",
        f"{bad}:3: step 'a': duplicate step name 'a' (first defined on line 1)",
        f"{bad}:4: missing key 'step'; add 'step: <name>' to name this step",
        f"{bad}:5: key 'note' must be text, found a list; quote the value if it is text that "
        "starts with '[' or '-'",
        f"{bad}:6: step 'c': gate 'd' names a missing step",
    ]


def test_validate_valid_exits_zero(tmp_path) -> None:
    one = tmp_path / "one.flow"
    one.write_text("- step: a\n")

    assert validate_files([str(one)]) == ([f"{one}: 1 step, valid"], 0)


def test_validate_missing_file(tmp_path) -> None:
    lines, status = validate_files([str(tmp_path / "nope.flow")])

    assert status == 1
    assert lines == [f"{tmp_path / 'nope.flow'}: cannot read the file: No such file "
                     "or directory; check the path and its permissions"]


# --------------------------------------------------------------------------------------------
# Writing


def test_dump_layout() -> None:
    flow = Flow([step("get", owner="alice", groups=("food", "no")),
                 step("eat", note="two\nlines\n", gates=("get",),
                      notify_at_finish=("a@x.org",))])

    assert dump_flow(flow) == """\
---
- step: get
  description:
  owner: alice
  startCommand:
  notifyAtStart: []
  finishCommand:
  notifyAtFinish: []
  url:
  note:
  group:
  - food
  - 'no'
  gates: []
- step: eat
  description:
  owner:
  startCommand:
  notifyAtStart: []
  finishCommand:
  notifyAtFinish: a@x.org
  url:
  note: |
    two
    lines
  group: []
  gates:
  - get
"""


# Text values that a careless writer would corrupt on the way through YAML.
AWKWARD_TEXT = [
    "no", "yes", "On", "TRUE", "null", "NULL", "~", "y", "n", "1.10", "010", "0x1F", "1e3",
    "12:30", "190:20:30", "2014-03-02", "1,000", "1_000", "+1", "-1", ".inf", ".NaN", "0b101",
    ":symbol", "=", "<<", "-", "- a", "---", "...", "a: b", "a:b", "ends:", "a #b", "a#b", "#x",
    " leading", "trailing ", "  ", "'single'", '"double"', "it's", "back\\slash", "tab\there",
    "trailing tab\t", "[a, b]", "{a: b}", "*star", "&amp", "!bang", "%percent", "@at", "`tick",
    "|", ">", "?", "? x", ",", "a,b", "caf\u00e9 \u4e2d\u6587 \U0001f3a9", "\x07bell",
    "del\x7f", "bom\ufeff", "nbsp\xa0", "ls\u2028x", "nel\x85x",
]
# Text that the file format could carry but a flow rejects, because commands get it in their
# environment.
UNUSABLE_TEXT = ["nul\x00", "\ud800lone"]
AWKWARD_NOTES = [
    "two\nlines", "two\nlines\n", "ends\n\n\n", "\nleading newline", "  indented\nnote",
    "\n", "\n\n", "a\n\n\nb", "line: one\n# not a comment\n- not a list\n", "tab\n\tindented",
    "trailing space \nnext", "crlf\r\nline", "spaces only\n   \n", "  \n  x",
    "caf\u00e9\n\U0001f3a9",
]


@pytest.mark.parametrize("text", AWKWARD_TEXT, ids=ascii)
def test_roundtrip_awkward_text(text: str) -> None:
    # A blank command is rejected, so the blank texts go into the other fields only.
    command = text if text.strip() else None
    flow = Flow([step("a", description=text, owner=text, url=text, note=text,
                      start_command=command, finish_command=command)])

    dumped = dump_flow(flow)
    again = parse_flow(dumped, "awkward.flow")

    assert again == flow
    loaded = yaml.safe_load(dumped)[0]
    assert loaded["owner"] == text
    assert loaded["note"] == text


@pytest.mark.parametrize("text", AWKWARD_NOTES, ids=ascii)
def test_roundtrip_multiline_note(text: str) -> None:
    flow = Flow([step("a", note=text, start_command=text if text.strip() else None)])

    dumped = dump_flow(flow)

    assert parse_flow(dumped, "notes.flow") == flow
    assert yaml.safe_load(dumped)[0]["note"] == text


@pytest.mark.parametrize("text", UNUSABLE_TEXT, ids=ascii)
def test_unusable_text_not_in_flow(text: str) -> None:
    with pytest.raises(FlowError):
        Flow([step("a", description=text)])


def test_multiline_note_uses_block() -> None:
    text = dump_flow(Flow([step("a", note="first: line\n# second\n")]))

    assert "  note: |\n    first: line\n    # second\n" in text


@pytest.mark.parametrize("name", ["no", "on", "1.10", "010", "1e3", "-", "---", ".", "-1",
                                  ".inf", "1_000", "0x1F", "\u00e9t\u00e9"])
def test_roundtrip_awkward_names(name: str) -> None:
    flow = Flow([step(name, groups=(name,)), step("b", gates=(name,), groups=(name, "x"))])

    dumped = dump_flow(flow)

    assert parse_flow(dumped, "names.flow") == flow
    assert yaml.safe_load(dumped)[1]["gates"] == [name]


def test_roundtrip_original_layout() -> None:
    flow = parse_flow(TEA_FLOW, "tea.flow")

    assert parse_flow(dump_flow(flow), "tea.flow") == flow


def test_save_then_load(tmp_path) -> None:
    flow = parse_flow(TEA_FLOW, "tea.flow")
    path = tmp_path / "tea.flow"

    save_flow(flow, path)

    assert load_flow(path) == flow
    assert path.read_text(encoding="utf-8") == dump_flow(flow)
    assert os.listdir(tmp_path) == ["tea.flow"]


def test_save_keeps_mode(tmp_path) -> None:
    path = tmp_path / "tea.flow"
    path.write_text("old")
    path.chmod(0o640)

    save_flow(parse_flow(TEA_FLOW, "tea.flow"), path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_text().startswith("---\n- step: boilwater\n")


def test_save_keeps_symlink(tmp_path) -> None:
    real = tmp_path / "real.flow"
    real.write_text("old")
    link = tmp_path / "link.flow"
    link.symlink_to(real)

    save_flow(parse_flow(TEA_FLOW, "tea.flow"), link)

    assert link.is_symlink()
    assert real.read_text().startswith("---\n- step: boilwater\n")


def test_save_missing_directory(tmp_path) -> None:
    path = tmp_path / "nowhere" / "x.flow"

    with pytest.raises(FlowSaveError) as info:
        save_flow(parse_flow(TEA_FLOW, "tea.flow"), path)

    assert isinstance(info.value, TheHatError)
    assert str(info.value) == (f"cannot write flow 'x' to {path}: No such file or "
                               "directory")


def test_save_failure_removes_temp(tmp_path) -> None:
    path = tmp_path / "x.flow"
    path.write_text("old")
    denied = PermissionError(13, "Permission denied")

    with mock.patch("os.replace", autospec=True, side_effect=denied):
        with pytest.raises(FlowSaveError) as info:
            save_flow(parse_flow(TEA_FLOW, "tea.flow"), path)

    assert str(info.value) == f"cannot write flow 'x' to {path}: Permission denied"
    assert os.listdir(tmp_path) == ["x.flow"]
    assert path.read_text() == "old"


# --------------------------------------------------------------------------------------------
# Hostile input: whatever the text, the only exception is FlowError


def parse_or_problems(text: str) -> bool:
    """Parse `text`; return True when it is a valid flow, False on FlowError."""
    try:
        parse_flow(text, "fuzz.flow")
    except FlowError as exc:
        assert exc.problems
        assert all(p.line is None or 1 <= p.line <= text.count("\n") + 2 for p in exc.problems)
        return False
    return True


def test_random_bytes_only_flowerror() -> None:
    rng = random.Random(1)
    outcomes = set()
    for _ in range(1000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        outcomes.add(parse_or_problems(data.decode("latin-1")))

    assert outcomes == {False}


def test_random_file_bytes_only_flowerror(tmp_path) -> None:
    rng = random.Random(1)
    path = tmp_path / "fuzz.flow"
    for _ in range(200):
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 100))))
        with pytest.raises(FlowError):
            load_flow(path)


MUTATION_PIECES = ["\n", " ", "  ", "\t", ":", ": ", "- ", "-", "[", "]", "{", "}", ",", "#",
                   "&a ", "*a", "!!str ", "!!python/object ", "'", '"', "|", ">", "?", "~",
                   "---\n", "...\n", "\\", "%YAML 1.1\n", "\x00", "\ufeff", "\u2028", "x", "9"]


def mutate(text: str, rng: random.Random) -> str:
    """Apply one to four random edits: insert a YAML-significant piece, delete text, copy text
    or shuffle the lines."""
    for _ in range(rng.randrange(1, 5)):
        where = rng.randrange(len(text) + 1)
        choice = rng.randrange(4)
        if choice == 0:
            text = text[:where] + rng.choice(MUTATION_PIECES) + text[where:]
        elif choice == 1:
            text = text[:where] + text[where + rng.randrange(1, 20):]
        elif choice == 2:
            start = rng.randrange(len(text) + 1)
            text = text[:where] + text[start:start + rng.randrange(1, 40)] + text[where:]
        else:
            lines = text.split("\n")
            rng.shuffle(lines)
            text = "\n".join(lines)
    return text


def test_mutations_only_flowerror() -> None:
    rng = random.Random(1)
    outcomes = {True: 0, False: 0}
    for _ in range(2000):
        outcomes[parse_or_problems(mutate(TEA_FLOW, rng))] += 1

    # Both outcomes occur, so the mutations neither always break nor never touch the flow.
    assert outcomes[True] > 50
    assert outcomes[False] > 500


def test_invalid_recipient_rejected() -> None:
    text = "- step: a\n  notifyAtStart: ops@example.com, bob\n  notifyAtFinish: [x y@z.org]\n"

    with pytest.raises(FlowError) as caught:
        parse_flow(text, "mail.flow")

    message = str(caught.value)
    assert "notifyAtStart: 'bob' is not an e-mail address" in message
    assert "notifyAtFinish: 'x y@z.org'" in message


def test_invalid_clock_owner_rejected() -> None:
    text = "- step: a\n  owner: clock-alarm:12/5/2026@2:00\n- step: b\n  owner: 'program: '\n"

    with pytest.raises(FlowError) as caught:
        parse_flow(text, "clock.flow")

    message = str(caught.value)
    assert "step 'a': owner: '12/5/2026@2:00' in clock owner" in message
    assert "step 'b': owner: program owner 'program: ' has no command line" in message


def test_timeout_and_revert_command_round_trip() -> None:
    text = ("- step: a\n  owner: program:./migrate.sh\n  revertCommand: ./migrate.sh --undo\n"
            "  timeout: 90.5\n- step: b\n  timeout: 300\n")

    flow = parse_flow(text, "program.flow")
    saved = dump_flow(flow)

    assert flow.steps["a"].revert_command == "./migrate.sh --undo"
    assert flow.steps["a"].timeout == 90.5
    assert flow.steps["b"].timeout == 300
    assert "  timeout: 90.5\n" in saved
    assert "  timeout: 300\n" in saved
    assert saved.count("revertCommand") == 1
    assert parse_flow(saved, "program.flow") == flow


@pytest.mark.parametrize("value", ["0", "-5", "soon", "nan", "inf", "604801", "[1]"])
def test_invalid_timeout_rejected(value: str) -> None:
    with pytest.raises(FlowError) as caught:
        parse_flow(f"- step: a\n  timeout: {value}\n", "t.flow")

    assert "'timeout'" in str(caught.value)


@pytest.mark.parametrize("line, reason", [
    ('  startCommand: "echo a\\0b"', "startCommand contains a NUL character"),
    ('  finishCommand: "   "', "finishCommand is blank"),
    ('  revertCommand: " "', "revertCommand is blank"),
    ('  description: "x\\ud800"', "description contains a character that is not valid Unicode"),
    ('  owner: "program:echo \\0"', "contains a NUL character"),
    ("  note: " + "n" * 40_000, "note is 40,000 characters long; the limit is 32,768"),
])
def test_unusable_text_rejected(line: str, reason: str) -> None:
    with pytest.raises(FlowError) as caught:
        parse_flow(f"- step: a\n{line}\n", "text.flow")

    assert reason in str(caught.value)
