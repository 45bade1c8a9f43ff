"""Fuzz the command language with random and mutated command lines.

A corpus of valid command lines for the example flows is mutated (bit flips, truncation,
duplication, hostile Unicode, control characters, very long lines, huge name lists, odd
numbers and paths) and fed through `Daemon.execute` in several conversations. For every
line, no exception escapes, no reply is the generic internal-error line, nothing is logged at
ERROR, and every rejection gives a reason. The engine invariants of tests/invariants.py are
checked every CHECK_EVERY lines and for every run at the end of each batch.

The run is deterministic for a seed. THEHAT_FUZZ_SEED picks another seed and
THEHAT_FUZZ_SCALE multiplies the number of lines (default 1: 100,000 lines, 98,000 through
daemons without a store, every other batch of them with an access section, and 2,000 through
daemons with a store). A failure names the seed, the batch and the line, so it can be replayed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
from pathlib import Path

import pytest

from thehat.access import Identity, Speaker, parse_access_section
from thehat.commands import COMMANDS
from thehat.config import Config, EngineConfig
from thehat.daemon import Daemon, open_daemon

from tests import invariants
from tests.helpers import FakeClock

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FLOWS = ("toast", "db-minor-upgrade", "maintenance-window")
SEED = int(os.environ.get("THEHAT_FUZZ_SEED", "20261205"))
SCALE = float(os.environ.get("THEHAT_FUZZ_SCALE", "1"))
# Lines per daemon: each batch starts from fresh copies of the example flows, so edits such
# as addstep cannot grow a flow without bound over the whole run.
BATCH = 1_000
MEMORY_LINES = int(98_000 * SCALE)
STORE_LINES = int(2_000 * SCALE)
# The run a command acted on is checked after every CHECK_EVERY-th command, and every run at
# the end of each batch. Checking after every command would double the time of the test.
CHECK_EVERY = 8
CONVERSATIONS = ("tty:alice", "irc:#ops", "xmpp:ops@conference.example.org")
# Roles for every other batch without a store, so refusals by role are fuzzed too.
ACCESS = {"default": "observer", "admin": ["irc:alice"], "operator": ["irc:bob"],
          "flows": {FLOWS[0]: {"admin": ["irc:carol"]}, FLOWS[1]: {"observer": ["irc:bob"]}}}
USERS = ("alice", "bob", "carol", "alice", "Ädmin", "a" * 300, "")

# Characters that look like spaces, quotes or hyphens, zero-width characters, controls,
# YAML line breaks, direction overrides and a combining mark.
HOSTILE_CHARACTERS = (
    "\u00a0", "\u3000", "\u2007", "\u202f", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff",
    "\u201c", "\u201d", "\u2018", "\u2019", "\u00ab", "\u00bb", "\u2010", "\u2011", "\u2012",
    "\u2013", "\u2014", "\u2212", "\ufe63", "\uff0d", "\x00", "\x01", "\x07", "\x08", "\t",
    "\n", "\r", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\u202e",
    "\u0301", "\U0001f600", "\ufffd", "\udc80", ",", " ", "'", '"', "\\", "%", "$", "{", "}",
)
ODD_VALUES = (
    "../../etc/passwd", "/etc/passwd", "..", ".", "~root", "a/../../x", "C:\\Windows",
    "%2e%2e%2fetc", "toast.flow/../../x", "\x00", "", "-1", "0", "00", "1e309", "nan", "inf",
    "-0", "0x10", "\u0663", "99999999999999999999999999", "3.5", "1_000", "program:rm -rf /",
    "clock-alarm:13/45/2026@99:99:99", "clock-stopwatch:0/0/0@0:0:1", "clock-handoff:x",
    "$(id)", "`id`", "; rm -rf /", "|cat", "<script>", "a@b", "a" * 5000,
)


def corpus_lines(steps: list[str], groups: list[str], flows: tuple[str, ...]) -> list[str]:
    """Return valid command lines for one flow: every command word, with real arguments."""
    lines = ["", "status", "list", "dump", "date", "time", "version", "hello", "ping", "help",
             "history", "report", "ls", "reload", "save", "gimmeall", "dryrun", "run", "stop",
             "tictoc", "idleprompt", "idleprompt 0", "idleprompt 7", "clockProcessing",
             "clockProcessing on", "notificationProcessing off", "quit", "exec ls",
             "checkout .", "commit . message", "unload", "new fresh", "save copy",
             "save copy force"]
    lines += [f"help {word}" for word in COMMANDS]
    lines += [f"load {flow}" for flow in flows] + [f"restore {flow}" for flow in flows]
    for index, step in enumerate(steps):
        other = steps[(index + 1) % len(steps)]
        lines += [f"{word} {step}" for word in ("gimme", "start", "finish", "fail",
                                                 "reverting", "reverted", "revert",
                                                 "history", "dryrun", "delstep")]
        lines += [
            f"gimme {step},{other}", f"finish {step} {other}", f"giveto bob {step}",
            f"giveto {step} bob", f"delstep {step} force", f"set {step} description new text",
            f"set {step} addgate {other}", f"set {step} delgate {other}",
            f"set {step} gates {other}", f"set {step} name {step}2", f"set {step} owner bob",
            f"set {step} owner clock-alarm:12/5/2026@3:0:0", f"set {step} timeout 30",
            f"set {step} notifyAtStart ops@example.com", f"set {step} url https://example.com/",
            f"set {step} note a note", f"set {step} group extra", f"set {step} addgroup more",
            f"set {step},{other} delgroup extra", f"addsequence n{index},m{index} {step}",
            f"addstep new{index}",
        ]
    for group in groups:
        lines += [f"gimmegroup {group}", f"givegroupto {group} bob", f"givegroupto {group} "
                  "clock-stopwatch:0/0/0@0:10:0"]
    return lines


def mutate(line: str, corpus: list[str], rng: random.Random) -> str:
    """Return one mutation of `line`, sometimes mutated again."""
    kind = rng.randrange(12)
    if kind == 0 and line:
        data = bytearray(line.encode("utf-8", "surrogatepass"))
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        errors = "surrogateescape" if rng.random() < 0.2 else "replace"
        result = data.decode("utf-8", errors)
    elif kind == 1:
        result = line[:rng.randint(0, len(line))]
    elif kind == 2:
        result = line * rng.randint(2, 6) if rng.random() < 0.5 else line + " " + rng.choice(corpus)
    elif kind in (3, 4):
        characters = list(line)
        for _ in range(rng.randint(1, 4)):
            characters.insert(rng.randint(0, len(characters)), rng.choice(HOSTILE_CHARACTERS))
        result = "".join(characters)
    elif kind == 5:
        result = line.replace(" ", rng.choice(HOSTILE_CHARACTERS))
    elif kind == 6:
        words = line.split() or ["status"]
        result = words[0] + " " + rng.choice(ODD_VALUES) + " " + " ".join(words[1:])
    elif kind == 7:
        words = line.split() or ["gimme"]
        names = [f"n{i}" for i in range(rng.choice((150, 201, 1_000, 5_000)))]
        result = words[0] + " " + rng.choice((",", " ", ", ", ",,")).join(names)
    elif kind == 8:
        result = line + " " + "x" * rng.choice((1_000, 1_000, 1_000, 10_000, 10_000, 100_000))
    elif kind == 9:
        result = "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randint(1, 40)))
    elif kind == 10:
        result = line.upper() if rng.random() < 0.5 else line.swapcase()
    else:
        words = line.split()
        rng.shuffle(words)
        result = " ".join(words)
    return mutate(result, corpus, rng) if rng.random() < 0.2 else result


def fuzz_lines(corpus: list[str], rng: random.Random, count: int) -> list[str]:
    """Return `count` lines: a quarter from the corpus as it is, the rest mutated."""
    return [rng.choice(corpus) if rng.random() < 0.25 else mutate(rng.choice(corpus), corpus, rng)
            for _ in range(count)]


def make_datadir(base: Path) -> Config:
    datadir = base / "data"
    datadir.mkdir(parents=True)
    for flow in FLOWS:
        shutil.copy(EXAMPLES / f"{flow}.flow", datadir / f"{flow}.flow")
    return Config(engine=EngineConfig(datadir=datadir, timezone="UTC"))


def corpus_by_flow(config: Config) -> dict[str, list[str]]:
    daemon = Daemon(config, FakeClock())
    corpus = {}
    for flow in FLOWS:
        daemon.execute("setup", "alice", f"load {flow}")
        run = daemon.runs[flow]
        corpus[flow] = corpus_lines(list(run.steps), run.groups(), FLOWS)
    return corpus


def build_corpus(config: Config) -> list[str]:
    return [line for lines in corpus_by_flow(config).values() for line in lines]


def check_outcome(daemon: Daemon, conversation: str, text: str, outcome: object,
                  where: str) -> None:
    lines = getattr(outcome, "lines")
    internal = [line for line in lines if line.startswith("Internal error")]
    assert not internal, f"{where}: internal error for {text!r}: {internal}"
    if getattr(outcome, "refusals") or not getattr(outcome, "events"):
        assert any(line.strip() for line in lines), f"{where}: no reason given for {text!r}"


def as_speaker(daemon: Daemon, user: str) -> Speaker | str:
    """Give `user` the IRC identity that the access section matches, when there is one."""
    if daemon.config.access.configured:
        return Speaker(user, (Identity("irc", user),))
    return user


def run_batch(daemon: Daemon, clock: FakeClock, lines: list[str], rng: random.Random,
              caplog: pytest.LogCaptureFixture, where: str) -> None:
    """Feed `lines` through the daemon; check each reply, the log and every run."""
    for flow, conversation in zip(FLOWS, CONVERSATIONS):
        daemon.execute(conversation, as_speaker(daemon, "alice"), f"load {flow}")
    for number, text in enumerate(lines):
        conversation = rng.choice(CONVERSATIONS)
        if daemon.run_for(conversation) is None and rng.random() < 0.5:
            daemon.execute(conversation, as_speaker(daemon, "alice"),
                           f"load {rng.choice(FLOWS)}")
        user = rng.choice(USERS)
        clock.advance(seconds=rng.randint(0, 600))
        position = f"{where}, line {number}"
        try:
            outcome = daemon.execute(conversation, as_speaker(daemon, user), text,
                                     admin=rng.random() < 0.1)
        except Exception as exc:
            raise AssertionError(f"{position}: {text!r} from {user!r} raised {exc!r}") from exc
        check_outcome(daemon, conversation, text, outcome, position)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, f"{position}: {text!r} logged {errors[0].getMessage()}"
        run = daemon.run_for(conversation)
        if run is not None and number % CHECK_EVERY == 0:
            invariants.check_run(run)
    for run in daemon.runs.values():
        invariants.check_run(run)


def test_fuzz_command_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """MEMORY_LINES random and mutated lines through daemons without a store."""
    caplog.set_level(logging.ERROR)
    corpus = build_corpus(make_datadir(tmp_path / "corpus"))
    rng = random.Random(SEED)
    access = parse_access_section(ACCESS, "fuzz")
    for batch in range(max(1, MEMORY_LINES // BATCH)):
        clock = FakeClock()
        config = make_datadir(tmp_path / f"batch{batch}")
        if batch % 2:
            config = dataclasses.replace(config, access=access)
        daemon = Daemon(config, clock)
        lines = fuzz_lines(corpus, rng, BATCH)
        run_batch(daemon, clock, lines, rng, caplog,
                  f"THEHAT_FUZZ_SEED={SEED}, memory batch {batch}")
        shutil.rmtree(tmp_path / f"batch{batch}")


def test_fuzz_command_lines_with_store(tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """STORE_LINES lines through daemons with a SQLite store; a restart restores every run."""
    caplog.set_level(logging.ERROR)
    corpus = build_corpus(make_datadir(tmp_path / "corpus"))
    rng = random.Random(SEED + 1)
    for batch in range(max(1, STORE_LINES // BATCH)):
        clock = FakeClock()
        config = make_datadir(tmp_path / f"batch{batch}")
        daemon = open_daemon(config, clock)
        where = f"THEHAT_FUZZ_SEED={SEED}, store batch {batch}"
        try:
            run_batch(daemon, clock, fuzz_lines(corpus, rng, BATCH), rng, caplog, where)
        finally:
            assert daemon.store is not None and daemon.lock is not None
            daemon.store.close()
            daemon.lock.release()
        restored = open_daemon(config, clock)
        try:
            invariants.same_state(daemon.runs, restored.runs)
            assert restored.attachments == daemon.attachments, where
        finally:
            assert restored.store is not None and restored.lock is not None
            restored.store.close()
            restored.lock.release()


def test_corpus_lines_are_valid(tmp_path: Path) -> None:
    """The unmutated corpus is valid: no line is an unknown command or a usage error."""
    config = make_datadir(tmp_path)
    for flow, corpus in corpus_by_flow(config).items():
        daemon = Daemon(config, FakeClock())
        daemon.execute("tty:alice", "alice", f"load {flow}")
        daemon.execute("tty:alice", "alice", "gimmeall")
        for line in corpus:
            reply = daemon.execute("tty:alice", "alice", line).lines
            assert line.startswith("help") or not any(text.startswith(("Unknown command", "usage:")) for text in reply), \
                (flow, line, reply)
            if daemon.run_for("tty:alice") is None:
                daemon.execute("tty:alice", "alice", f"load {flow}")
