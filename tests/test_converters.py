"""Tests of the Planner and ZNode imports and the Mermaid export.

The Planner files under tests/data/planner were written for these tests by hand, in the layout
GNOME Planner 0.14 saves (`mrproject-version="2"`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from thehat.converters import (Conversion, ConversionError, export_mermaid, import_planner,
                               import_znode)
from thehat.converters import conversion
from thehat.converters.planner import MAX_NESTING
from thehat.engine import Run
from thehat.flowfile import load_flow
from thehat.model import Flow, StepDef, StepState

from tests.helpers import FakeClock

REPOSITORY = Path(__file__).resolve().parent.parent
PLANNER_DATA = Path(__file__).resolve().parent / "data" / "planner"
VALID_PLANNER_FILES = ["nested", "dependencies", "resources", "notes", "no-declaration"]


def read_planner(name: str, names: str = "id") -> Conversion:
    path = PLANNER_DATA / f"{name}.planner"
    return import_planner(path.read_bytes(), str(path), names)  # type: ignore[arg-type]


def steps_of(conversion: Conversion) -> dict[str, StepDef]:
    return dict(conversion.flow.steps)


def run_to_end(flow: Flow) -> Run:
    """Take and finish every ready step until the run ends; fail if it cannot end."""
    run = Run("imported", flow, FakeClock())
    for _ in range(len(flow) + 1):
        if run.ended:
            break
        for step in run.actionable():
            run.set_owner(step.name, "tester", "tester")
            run.finish(step.name, "tester")
    assert run.ended
    assert all(step.state is StepState.FINISHED for step in run.steps.values())
    return run


def planner_project(tasks: str, resources: str = "", allocations: str = "") -> str:
    return (f'<?xml version="1.0"?>\n<project name="t" mrproject-version="2">\n'
            f"<tasks>\n{tasks}\n</tasks>\n<resources>{resources}</resources>\n"
            f"<allocations>{allocations}</allocations>\n</project>\n")


# --------------------------------------------------------------------------------------------
# Planner: structure


def test_planner_summary_gated_on_direct_children() -> None:
    steps = steps_of(read_planner("nested"))

    assert list(steps) == [f"task{i}" for i in range(1, 12)]
    assert steps["task2"].gates == ("task3", "task4", "task7")
    assert steps["task4"].gates == ("task5", "task6")
    assert steps["task8"].gates == ("task9", "task10")


def test_planner_summary_predecessors_pass_to_entry_children() -> None:
    steps = steps_of(read_planner("nested"))

    # task3 has no predecessor inside task2, so it waits for task2's predecessor task1.
    assert steps["task3"].gates == ("task1",)
    # task5 is the entry of task4, whose own predecessor is task3.
    assert steps["task5"].gates == ("task3",)
    # Children with a predecessor inside their summary task keep only their own gates.
    assert steps["task6"].gates == ("task5",)
    assert steps["task7"].gates == ("task4",)
    assert steps["task9"].gates == ("task2",)
    assert steps["task11"].gates == ("task8",)


def test_planner_summary_groups_outermost_first() -> None:
    steps = steps_of(read_planner("nested"))

    assert steps["task1"].groups == ()
    assert steps["task2"].groups == ("phase-one",)
    assert steps["task4"].groups == ("phase-one", "upgrade")
    assert steps["task6"].groups == ("phase-one", "upgrade")
    assert steps["task7"].groups == ("phase-one",)
    assert steps["task9"].groups == ("phase-two",)


def test_planner_summary_flattening_warns() -> None:
    conversion = read_planner("nested")

    assert len(conversion.warnings) == 1
    assert "flattened 3 summary tasks" in conversion.warnings[0]
    for name in ("task2 (group phase-one)", "task4 (group upgrade)", "task8 (group phase-two)"):
        assert name in conversion.warnings[0]


def test_planner_milestones_join_group() -> None:
    steps = steps_of(read_planner("nested"))

    assert steps["task10"].groups == ("phase-two", "milestone")
    assert steps["task11"].groups == ("milestone",)


def test_planner_milestone_without_warning() -> None:
    text = planner_project('<task id="1" name="Go live" type="milestone"/>')

    conversion = import_planner(text, "milestone.planner")

    assert conversion.warnings == []
    assert steps_of(conversion)["task1"].groups == ("milestone",)


def test_planner_summary_group_avoids_milestone_name() -> None:
    text = planner_project('<task id="1" name="Milestone"><task id="2" name="a"/></task>')

    steps = steps_of(import_planner(text, "m.planner"))

    assert steps["task2"].groups == ("milestone-2",)


def test_planner_nesting_to_limit_imports() -> None:
    depth = MAX_NESTING
    text = planner_project("".join(f'<task id="{i}" name="level {i}">' for i in range(depth))
                           + "</task>" * depth)

    conversion = import_planner(text, "deep.planner")

    assert len(conversion.flow) == depth
    assert steps_of(conversion)["task0"].gates == ("task1",)
    run_to_end(conversion.flow)


def test_planner_nesting_past_limit_rejected() -> None:
    depth = MAX_NESTING + 1
    text = planner_project("".join(f'<task id="{i}" name="level {i}">' for i in range(depth))
                           + "</task>" * depth)

    with pytest.raises(ConversionError, match=f"nested more than {MAX_NESTING} levels"):
        import_planner(text, "deep.planner")


# --------------------------------------------------------------------------------------------
# Planner: dependencies


def test_planner_dependency_types_become_gates() -> None:
    steps = steps_of(read_planner("dependencies"))

    for name in ("task2", "task3", "task4", "task5"):
        assert steps[name].gates == ("task1",)
    assert steps["task6"].gates == ("task2", "task3")
    assert steps["task7"].gates == ("task4", "task5", "task6")


def test_planner_dependency_approximations_warn() -> None:
    warnings = read_planner("dependencies").warnings

    assert warnings == [
        "task2: dependency on task1 is start-to-start with a lag of 2 h; imported as an "
        "ordinary gate (task2 waits for task1 to finish)",
        "task3: dependency on task1 is finish-to-finish; imported as an ordinary gate "
        "(task3 waits for task1 to finish)",
        "task4: dependency on task1 is start-to-finish with a lead of 30 min; imported as an "
        "ordinary gate (task4 waits for task1 to finish)",
        "task5: dependency on task1 is finish-to-start with a lag of 90 s; imported as an "
        "ordinary gate (task5 waits for task1 to finish)",
        "task7: dependency on task4 is start-to-start with a lag of 1 h; dependency on task6 "
        "is finish-to-finish with a lag of 61 s; imported as ordinary gates (task7 waits for "
        "task4, task6 to finish)",
    ]


def test_planner_unknown_dependency_type_names_line() -> None:
    text = planner_project('<task id="1"/>\n<task id="2"><predecessors>\n'
                           '<predecessor id="1" predecessor-id="1" type="XY"/>'
                           "</predecessors></task>")

    with pytest.raises(ConversionError, match=r"^t\.planner:6: .*unknown type 'XY'"):
        import_planner(text, "t.planner")


def test_planner_dangling_predecessor_names_line() -> None:
    path = PLANNER_DATA / "dangling-predecessor.planner"

    with pytest.raises(ConversionError) as caught:
        import_planner(path.read_bytes(), "dangling.planner")

    assert str(caught.value) == ("dangling.planner:7: task 2 has predecessor '42', but no "
                                 "task has that id")


def test_planner_cycle_is_conversion_error() -> None:
    text = planner_project(
        '<task id="1"><predecessors><predecessor predecessor-id="2"/></predecessors></task>\n'
        '<task id="2"><predecessors><predecessor predecessor-id="1"/></predecessors></task>')

    with pytest.raises(ConversionError, match=r"cycle\.planner:4: step 'task1': gates form a "
                                              r"cycle: task1 -> task2 -> task1"):
        import_planner(text, "cycle.planner")


# --------------------------------------------------------------------------------------------
# Planner: names, resources, notes


def test_planner_slug_names_unique_and_ascii() -> None:
    steps = steps_of(read_planner("resources", "slug"))

    assert list(steps) == ["cafe-offnen", "task2", "task3", "uberprufung", "cafe-offnen-2"]
    assert steps["uberprufung"].gates == ("cafe-offnen", "task2", "task3")
    assert steps["cafe-offnen-2"].gates == ("uberprufung",)


def test_planner_slug_names_of_summaries() -> None:
    steps = steps_of(read_planner("nested", "slug"))

    assert steps["phase-one"].gates == ("drain-node", "upgrade", "check-phase-one")
    assert steps["upgrade-packages"].gates == ("drain-node",)


def test_planner_invalid_names_mode_rejected() -> None:
    with pytest.raises(ValueError, match="names must be 'id' or 'slug'"):
        import_planner(planner_project(""), "x", "title")  # type: ignore[arg-type]


def test_planner_non_ascii_text_survives() -> None:
    steps = steps_of(read_planner("resources"))

    assert steps["task1"].description == "Café öffnen"
    assert steps["task2"].description == "Проверка"
    assert steps["task3"].description == "日本語の確認"
    assert steps["task1"].owner == "Zoë"
    assert steps["task2"].owner == "Ольга"


def test_planner_clock_and_program_resources_own_steps() -> None:
    steps = steps_of(read_planner("resources"))

    assert steps["task3"].owner == "clock-stopwatch:0/0/0@0:0:10"
    assert steps["task4"].owner == "program:./check-services.sh"
    assert steps["task5"].owner is None


def test_planner_first_of_several_resources_owns() -> None:
    conversion = read_planner("resources")

    assert steps_of(conversion)["task2"].owner == "Ольга"
    assert conversion.warnings == [
        "task2: 3 resources are allocated; the first, 'Ольга', became the owner and 'bob', "
        "'Zoë' were left out"]


def test_planner_invalid_clock_resource_rejected() -> None:
    text = planner_project('<task id="1"/>', '<resource id="1" name="clock-alarm:never"/>',
                           '<allocation task-id="1" resource-id="1"/>')

    with pytest.raises(ConversionError, match=r"clock\.planner:4: step 'task1': owner: "):
        import_planner(text, "clock.planner")


def test_planner_allocation_to_missing_resource() -> None:
    text = planner_project('<task id="1"/>', "", '<allocation task-id="1" resource-id="9"/>')

    with pytest.raises(ConversionError, match=r"a\.planner:7: an allocation names resource "
                                              r"'9', but no resource has that id"):
        import_planner(text, "a.planner")


def test_planner_note_fields_merge() -> None:
    steps = steps_of(read_planner("notes"))

    fetch = steps["task1"]
    assert fetch.url == "https://wiki.example.com/fetch"
    assert fetch.start_command == "echo started"
    assert fetch.groups == ("ops", "db")
    assert fetch.note is None
    # The note's owner wins over the allocated resource (erin).
    assert fetch.owner == "carol"


def test_planner_note_gates_added_to_predecessors() -> None:
    merge = steps_of(read_planner("notes"))["task4"]

    assert merge.gates == ("task3", "task2")
    assert merge.description == "Merge the branches"


def test_planner_note_gate_by_task_id_with_slugs() -> None:
    assert steps_of(read_planner("notes", "slug"))["merge"].gates == ("bill", "check")


def test_planner_note_values_stay_text() -> None:
    version = steps_of(read_planner("notes"))["task7"]

    assert version.description == "1.10"
    assert version.timeout == 90.0


def test_planner_plain_notes_kept_as_text() -> None:
    steps = steps_of(read_planner("notes"))

    assert steps["task2"].note == "Call the DBA before you start.\nTheir number is in the wiki."
    assert steps["task3"].note == "url:http://billing.example.com"
    assert steps["task3"].url is None
    assert steps["task6"].note == "{ unclosed: ["


def test_planner_note_with_unknown_key_warns() -> None:
    conversion = read_planner("notes")

    assert steps_of(conversion)["task5"].note == "owner: dave\ncolour: red"
    assert steps_of(conversion)["task5"].owner is None
    assert conversion.warnings == ["task5: the note was kept as text: it looks like step "
                                   "fields, but 'colour' is not a key of a flow file"]


@pytest.mark.parametrize("note", [
    "[" * 5000,
    "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]",
    "!!python/object/apply:os.system [echo hacked]",
    "owner: !!python/name:os.system",
    "gates: {a: b}",
    "gates: [[a]]",
    "timeout: soon",
    "step: renamed",
    "- a\n- b",
    "\t",
    "description: |\n  two\n  lines",
])
def test_planner_hostile_note_never_crashes(note: str) -> None:
    escaped = (note.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
               .replace("\n", "&#10;").replace("\t", "&#9;"))
    text = planner_project(f'<task id="1" name="n" note="{escaped}"/>')

    try:
        conversion = import_planner(text, "note.planner")
    except ConversionError as exc:
        # A note may set an invalid value, such as a description of two lines.
        assert "note.planner:4: step 'task1': description must be a single line" in str(exc)
        return
    assert steps_of(conversion)["task1"].note == (None if not note.strip() else note)


def test_planner_multiline_name_becomes_one_line() -> None:
    text = planner_project('<task id="1" name="first&#10;second"/>')

    conversion = import_planner(text, "n.planner")

    assert steps_of(conversion)["task1"].description == "first second"
    assert conversion.warnings == ["task1: the line breaks of the task name were replaced by "
                                   "spaces, because a description is one line"]


# --------------------------------------------------------------------------------------------
# Planner: input handling


def test_planner_without_declaration_or_resources() -> None:
    conversion = read_planner("no-declaration")

    assert steps_of(conversion)["task2"].gates == ("task1",)
    assert all(step.owner is None for step in conversion.flow)
    assert conversion.warnings == []


def test_planner_text_and_bytes_agree() -> None:
    path = PLANNER_DATA / "resources.planner"

    from_text = import_planner(path.read_text(encoding="utf-8"), "r.planner")
    from_bytes = import_planner(path.read_bytes(), "r.planner")

    assert from_text.flow == from_bytes.flow


def test_planner_declared_latin1_encoding_read() -> None:
    data = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<project mrproject-version="2">'
            '<tasks><task id="1" name="Café"/></tasks></project>').encode("latin-1")

    assert steps_of(import_planner(data, "l.planner"))["task1"].description == "Café"


def test_planner_malformed_xml_names_line() -> None:
    path = PLANNER_DATA / "malformed.planner"

    with pytest.raises(ConversionError) as caught:
        import_planner(path.read_bytes(), "malformed.planner")

    assert str(caught.value) == "malformed.planner:6: invalid XML at column 5: mismatched tag"


@pytest.mark.parametrize("name", ["billion-laughs", "external-entity"])
def test_planner_doctype_rejected(name: str) -> None:
    path = PLANNER_DATA / f"{name}.planner"

    with pytest.raises(ConversionError, match=rf"^{name}\.planner:2: the file has a DOCTYPE "
                                              "declaration"):
        import_planner(path.read_bytes(), f"{name}.planner")


def test_planner_other_root_rejected() -> None:
    with pytest.raises(ConversionError, match=r"x\.planner:1: the root element is <html>"):
        import_planner("<html/>", "x.planner")


def test_planner_duplicate_task_id_rejected() -> None:
    text = planner_project('<task id="1"/>\n<task id="1"/>')

    with pytest.raises(ConversionError, match=r"d\.planner:5: duplicate task id '1' \(first "
                                              r"used on line 4\)"):
        import_planner(text, "d.planner")


def test_planner_other_version_warns() -> None:
    text = '<project mrproject-version="1"><tasks><task id="1"/></tasks></project>'

    conversion = import_planner(text, "v.planner")

    assert conversion.warnings == ["the file has mrproject-version '1'; this import reads "
                                   "version 2, so check the result"]


def test_planner_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversion, "MAX_INPUT_BYTES", 100)

    with pytest.raises(ConversionError, match=r"big\.planner: the file is [\d,]+ bytes; the "
                                              r"limit for a Planner file is 100 bytes"):
        import_planner(planner_project('<task id="1"/>' * 10), "big.planner")


@pytest.mark.parametrize("names", ["id", "slug"])
@pytest.mark.parametrize("name", VALID_PLANNER_FILES)
def test_planner_import_runs_to_end(name: str, names: str) -> None:
    conversion = read_planner(name, names)

    run_to_end(conversion.flow)


# --------------------------------------------------------------------------------------------
# ZNode


def znode(nodes: list[dict[str, object]], connections: list[dict[str, object]]) -> str:
    return json.dumps({"nodes": nodes, "connections": connections}, indent=2)


def test_znode_fields_and_connections() -> None:
    text = znode(
        [{"id": 1, "txt": "step: backup\\ndescription: Back up the database\\nowner: alice",
          "x": 10, "y": 20},
         {"id": 2, "txt": "description: Upgrade\\ngates: [backup]\\ngroup: [db]"},
         {"id": "3", "txt": "step: verify\\nurl: https://wiki.example.com/verify"}],
        [{"nodeA": 1, "nodeB": 2}, {"nodeA": 2, "nodeB": "3"}, {"nodeA": 1, "nodeB": 3}])

    conversion = import_znode(text, "graph.json")
    steps = steps_of(conversion)

    assert list(steps) == ["backup", "task2", "verify"]
    assert steps["backup"].description == "Back up the database"
    assert steps["backup"].owner == "alice"
    assert steps["task2"].gates == ("backup",)
    assert steps["task2"].groups == ("db",)
    assert steps["verify"].gates == ("task2", "backup")
    assert steps["verify"].url == "https://wiki.example.com/verify"
    assert conversion.warnings == []
    run_to_end(conversion.flow)


def test_znode_plain_text_becomes_description() -> None:
    text = znode([{"id": 1, "txt": "Call the DBA\\nand wait"},
                  {"id": 2, "txt": "Note: bring coffee"},
                  {"id": 3, "txt": "url:http://x"},
                  {"id": 4}],
                 [{"nodeA": 1, "nodeB": 2}])

    conversion = import_znode(text.encode("utf-8"), "plain.json")
    steps = steps_of(conversion)

    assert steps["task1"].description == "Call the DBA and wait"
    assert steps["task2"].description == "Note: bring coffee"
    assert steps["task2"].gates == ("task1",)
    assert steps["task3"].description == "url:http://x"
    assert steps["task4"].description is None
    assert conversion.warnings == ["node 4: the text is empty, so step task4 has no description"]
    run_to_end(conversion.flow)


def test_znode_partial_field_mapping_warns() -> None:
    text = znode([{"id": 7, "txt": "owner: bob\\ncolour: red"}], [])

    conversion = import_znode(text, "p.json")

    assert steps_of(conversion)["task7"].description == "owner: bob colour: red"
    assert conversion.warnings == ["node 7: the text became the description: it looks like "
                                   "step fields, but 'colour' is not a key of a flow file"]


def test_znode_malformed_json_names_line() -> None:
    text = '{\n  "nodes": [\n    {"id": 1,}\n  ]\n}'

    with pytest.raises(ConversionError) as caught:
        import_znode(text, "bad.json")

    assert str(caught.value).startswith("bad.json:3: invalid JSON at column 14: ")


def test_znode_missing_node_named() -> None:
    text = znode([{"id": 1, "txt": "a"}], [{"nodeA": 1, "nodeB": 5}])

    with pytest.raises(ConversionError) as caught:
        import_znode(text, "m.json")

    assert str(caught.value) == "m.json: connection 1 names missing node 5 as nodeB"


def test_znode_duplicate_id_named() -> None:
    text = znode([{"id": 1, "txt": "a"}, {"id": 2, "txt": "b"}, {"id": 1, "txt": "c"}], [])

    with pytest.raises(ConversionError) as caught:
        import_znode(text, "d.json")

    assert str(caught.value) == "d.json: node 1: the id is used twice (nodes 1 and 3 in 'nodes')"


def test_znode_node_without_id_named() -> None:
    text = znode([{"id": 1, "txt": "a"}, {"txt": "b"}], [])

    with pytest.raises(ConversionError, match=r"n\.json: node 2 in 'nodes' has no id"):
        import_znode(text, "n.json")


def test_znode_duplicate_step_name_named() -> None:
    text = znode([{"id": 1, "txt": "step: same"}, {"id": 2, "txt": "step: same"}], [])

    with pytest.raises(ConversionError, match=r"s\.json: node 2: step name 'same' is also "
                                              r"used by node 1"):
        import_znode(text, "s.json")


def test_znode_invalid_flow_names_node() -> None:
    text = znode([{"id": 1, "txt": "a"}, {"id": 2, "txt": "gates: [nothere]"}], [])

    with pytest.raises(ConversionError) as caught:
        import_znode(text, "g.json")

    assert str(caught.value) == "g.json: node 2: step 'task2': gate 'nothere' names a missing step"


def test_znode_without_nodes_rejected() -> None:
    with pytest.raises(ConversionError, match="with a list of 'nodes'"):
        import_znode("[1, 2]", "x.json")


# --------------------------------------------------------------------------------------------
# Mermaid


def test_mermaid_contains_every_step_and_edge() -> None:
    flow = load_flow(REPOSITORY / "examples" / "toast.flow")

    text = export_mermaid(flow)

    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    ids = {step.name: f"s{index}" for index, step in enumerate(flow)}
    for step in flow:
        assert f'    {ids[step.name]}["{step.name}<br/>{step.description}"]' in lines
        for gate in step.gates:
            assert f"    {ids[gate]} --> {ids[step.name]}" in lines
    edges = [line for line in lines if "-->" in line]
    assert len(edges) == sum(len(step.gates) for step in flow)


def test_mermaid_escapes_hostile_text() -> None:
    flow = Flow([StepDef("end", description='"]; click s0 call alert()'),
                 StepDef("graph", description="<script>alert(1)</script> #1 & more",
                         gates=("end",))])

    text = export_mermaid(flow)

    assert 's0["end<br/>#quot;]; click s0 call alert()"]' in text
    assert "<script>" not in text
    assert ('s1["graph<br/>#lt;script#gt;alert(1)#lt;/script#gt; #35;1 #amp; more"]'
            in text)
    # Every label is one quoted string: no quote inside it is left unescaped.
    for line in text.splitlines()[1:]:
        if "[" in line:
            assert re.fullmatch(r'    s\d+\["[^"]*"\]', line), line


def test_mermaid_title_front_matter() -> None:
    flow = Flow([StepDef("a")])

    text = export_mermaid(flow, title='Night "upgrade"\n---')

    assert text.startswith('---\ntitle: "Night \\"upgrade\\" ---"\n---\nflowchart TD\n')
    assert text.endswith('    s0["a"]\n')


def test_znode_connection_without_end() -> None:
    text = znode([{"id": 1, "txt": "a"}], [{"nodeA": 1}])

    with pytest.raises(ConversionError, match="connection 1 has no nodeB"):
        import_znode(text, "graph.json")


def test_znode_number_text_warned() -> None:
    conversion = import_znode(znode([{"id": 1, "txt": 5}], []), "graph.json")

    assert conversion.warnings == ["node 1: the text is int 5, not text, so step task1 has no "
                                   "description"]
