"""Fuzz the flow file loader with mutated example flows and generated YAML documents.

Every text must either load as a flow or be rejected with a `FlowError` whose problems each
have a message, and a line within the file for every problem except those about the file as a
whole. A flow that loads must survive `dump_flow` and load again unchanged, and a run of it
must satisfy the engine invariants. No other exception may escape.

The run is deterministic for a seed. THEHAT_FUZZ_SEED picks another seed and
THEHAT_FUZZ_SCALE multiplies the number of texts (default 1: 10,000 through `parse_flow` and
500 of them written to disk and read with `load_flow` and `validate_files`). A failure names
the seed and the text's number, so it can be replayed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import yaml

from thehat.engine import Run
from thehat.errors import FlowError
from thehat.flowfile import dump_flow, load_flow, parse_flow, validate_files
from thehat.model import FILE_KEYS, Flow, StepDef

from tests import invariants
from tests.helpers import FakeClock

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SEED = int(os.environ.get("THEHAT_FUZZ_SEED", "20261205"))
SCALE = float(os.environ.get("THEHAT_FUZZ_SCALE", "1"))
TEXTS = int(10_000 * SCALE)
FILES = int(500 * SCALE)

# Problems about the file as a whole, which have no line.
WHOLE_FILE_PROBLEMS = ("the file is empty", "invalid YAML: ")
# Values that YAML reads as something other than plain text, or that break the layout.
ODD_TOKENS = (
    "[", "]", "{", "}", "[a, b]", "{a: b}", "&anchor", "*anchor", "&a [x]", "*a",
    "!!python/object/apply:os.system ['id']", "!!binary aGk=", "!custom x", "|", ">", "|-",
    '"unclosed', "'unclosed", "''", '""', "~", "null", "yes", "no", "on", "1.10", "010",
    "12:30", "2026-12-05", "- ", ": ", "#", "? key", "%YAML 1.1", "---", "...", "<<: *a",
    "\t", "\x00", "\ufeff", "\u2028", "\x85", "\udc80", "\u00a0", "\u3000", "\u200b", "é",
    "../../etc/passwd", "program:./x", "clock-alarm:99/99/2026@1:0:0",
)


def example_texts() -> list[str]:
    """Return the example flows, the largest one less often than the others.

    A mutated file outside the plain layout goes through PyYAML's pure-Python parser. That
    takes about 80 ms for the 9 KB db-minor-upgrade example on a 2-core machine, so that
    example is drawn one time in nine to keep the test within its time.
    """
    texts = {path.name: path.read_text(encoding="utf-8") for path in EXAMPLES.glob("*.flow")}
    large = texts.pop("db-minor-upgrade.flow")
    return [text for _, text in sorted(texts.items())] * 4 + [large]


def excerpt(text: str, rng: random.Random) -> str:
    """Return `text` cut down to a run of consecutive steps, or whole half of the time.

    Smaller texts keep the test fast (PyYAML reads about 0.4 KB per millisecond here), and a
    mutation then hits a larger share of the text.
    """
    if rng.random() < 0.5:
        return text
    head, *steps = text.split("\n- step:")
    first = rng.randrange(len(steps) + 1)
    chosen = steps[first:first + rng.randint(1, 4)]
    return "\n- step:".join([head, *chosen])


def mutate_lines(text: str, rng: random.Random, examples: list[str]) -> str:
    """Apply one line-level mutation: delete, duplicate, move, indent or replace a value."""
    lines = text.split("\n")
    index = rng.randrange(len(lines))
    kind = rng.randrange(9)
    if kind == 0:
        del lines[index]
    elif kind == 1:
        lines.insert(index, lines[index])
    elif kind == 2:
        other = rng.randrange(len(lines))
        lines[index], lines[other] = lines[other], lines[index]
    elif kind == 3:
        lines[index] = rng.choice(("", " ", "  ", "\t", "    ", "-")) + lines[index]
    elif kind == 4:
        lines[index] = lines[index].lstrip(" ")
    elif kind == 5:
        key, colon, _ = lines[index].partition(":")
        lines[index] = key + (colon or ":") + " " + rng.choice(ODD_TOKENS)
    elif kind == 6:
        donor = rng.choice(examples).split("\n")
        lines.insert(index, rng.choice(donor))
    elif kind == 7:
        word = rng.choice(list(FILE_KEYS) + ["gates", "step", "stpe", "Gates", "<<"])
        lines.insert(index, f"  {word}: {rng.choice(ODD_TOKENS)}")
    else:
        lines.insert(index, f"  gates: [{rng.choice(('kickoff', 'toastbread', 'nosuch'))}]")
    return "\n".join(lines)


def mutate_characters(text: str, rng: random.Random) -> str:
    """Apply one character-level mutation: flip bits, truncate, insert or duplicate text."""
    kind = rng.randrange(5)
    if kind == 0 and text:
        data = bytearray(text.encode("utf-8", "surrogatepass"))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return data.decode("utf-8", rng.choice(("replace", "surrogateescape")))
    if kind == 1:
        return text[:rng.randrange(len(text) + 1)]
    if kind == 2:
        position = rng.randint(0, len(text))
        # Text over the 32,768-character limit, now and then: PyYAML scans it slowly.
        token = "a" * 40_000 if rng.random() < 0.02 else rng.choice(ODD_TOKENS)
        return text[:position] + token + text[position:]
    if kind == 3:
        start = rng.randrange(len(text) + 1)
        piece = text[start:start + rng.randint(1, 200)]
        return text[:start] + piece * rng.randint(2, 5) + text[start:]
    return text.replace("\n", rng.choice(("\r\n", "\r", "\u2028", "\n\n", "\n\t")))


def random_value(rng: random.Random, depth: int = 0) -> object:
    """Return a random YAML value: text, numbers, booleans, None, lists or mappings."""
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randint(0, 12)))
    if kind == 1:
        return rng.choice((0, -1, 1.5, 10**30, True, False, None, float("inf")))
    if kind == 2:
        return rng.choice(ODD_TOKENS)
    if kind == 3:
        return f"s{rng.randrange(12)}"
    if kind == 4:
        return rng.choice(list(FILE_KEYS))
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    keys = list(FILE_KEYS) + ["stpe", "Gates", "other"]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 6))}


def random_document(rng: random.Random) -> str:
    """Return a generated document: a random flow, or random YAML of any shape."""
    kind = rng.randrange(3)
    if kind == 0:
        size = rng.randint(0, 12)
        steps = [StepDef(f"s{i}", owner=rng.choice((None, "alice", "clock-alarm:12/5/2026@2:0:0")),
                         groups=(f"g{i % 3}",),
                         gates=tuple(f"s{g}" for g in range(i) if rng.random() < 0.3))
                 for i in range(size)]
        return dump_flow(Flow(steps))
    if kind == 1:
        steps = [{"step": f"s{rng.randrange(12)}", **{rng.choice(list(FILE_KEYS)):
                                                      random_value(rng, 2) for _ in range(3)}}
                 for _ in range(rng.randint(0, 8))]
        return yaml.safe_dump(steps, allow_unicode=rng.random() < 0.5,
                              default_flow_style=rng.choice((None, True, False)))
    return yaml.safe_dump(random_value(rng), allow_unicode=True)


def fuzz_texts(rng: random.Random, count: int) -> list[str]:
    """Return `count` texts: mutated examples, mutated generated documents, and generated ones."""
    examples = example_texts()
    texts = []
    for _ in range(count):
        choice = rng.random()
        base = excerpt(rng.choice(examples), rng) if choice < 0.6 else random_document(rng)
        if choice < 0.9:
            for _ in range(rng.randint(1, 3)):
                if rng.random() < 0.6:
                    base = mutate_lines(base, rng, examples)
                else:
                    base = mutate_characters(base, rng)
        texts.append(base)
    return texts


def check_rejection(error: FlowError, text: str, where: str) -> None:
    """Every problem has a message, and a line inside the text unless it is about the file."""
    assert error.problems, f"{where}: FlowError without problems"
    assert str(error).strip(), f"{where}: FlowError with an empty message"
    last_line = len(text.splitlines()) + 1
    for problem in error.problems:
        assert problem.message.strip(), f"{where}: problem without a message"
        if problem.line is None:
            assert problem.message.startswith(WHOLE_FILE_PROBLEMS), (
                f"{where}: problem without a line: {problem.message}")
        else:
            assert 1 <= problem.line <= last_line, (
                f"{where}: line {problem.line} outside 1..{last_line}: {problem.message}")


def check_accepted(flow: Flow, where: str) -> None:
    """A loaded flow saves and loads back unchanged, and a run of it keeps the invariants."""
    again = parse_flow(dump_flow(flow), "saved.flow")
    assert again == flow, f"{where}: the flow changed when saved and loaded again"
    invariants.check_run(Run("fuzz", flow, FakeClock()))


def parse_checked(text: str, where: str) -> bool:
    """Parse `text` and check the result; return whether it loaded."""
    try:
        flow = parse_flow(text, "fuzz.flow")
    except FlowError as error:
        check_rejection(error, text, where)
        return False
    except Exception as exc:
        raise AssertionError(f"{where}: parse_flow raised {exc!r} for {text[:2000]!r}") from exc
    check_accepted(flow, where)
    return True


def test_fuzz_flow_texts() -> None:
    """TEXTS generated or mutated flow texts through parse_flow."""
    rng = random.Random(SEED)
    accepted = 0
    for number, text in enumerate(fuzz_texts(rng, TEXTS)):
        accepted += parse_checked(text, f"THEHAT_FUZZ_SEED={SEED}, text {number}")
    # Both outcomes must occur, or the mutations are too weak or too strong to test much.
    assert 0 < accepted < TEXTS


def test_fuzz_flow_files(tmp_path: Path) -> None:
    """FILES mutated byte strings written to disk, read with load_flow and validate_files."""
    rng = random.Random(SEED + 1)
    for number, text in enumerate(fuzz_texts(rng, FILES)):
        where = f"THEHAT_FUZZ_SEED={SEED}, file {number}"
        data = text.encode("utf-8", "surrogateescape")
        if rng.random() < 0.3 and data:
            position = rng.randrange(len(data))
            data = data[:position] + bytes([rng.randrange(128, 256)]) + data[position:]
        path = tmp_path / f"f{number}.flow"
        path.write_bytes(data)
        try:
            flow = load_flow(path)
        except FlowError as error:
            try:
                decoded = data.decode("utf-8")
            except UnicodeDecodeError:
                decoded = data.decode("utf-8", "replace")
            check_rejection(error, decoded, where)
            lines, status = validate_files([str(path)])
            assert status == 1, where
            assert all(line.startswith(str(path)) for line in lines), (where, lines)
        else:
            check_accepted(flow, where)
            assert validate_files([str(path)])[1] == 0, where
        path.unlink()
