"""The run store: run state and the audit journal in one SQLite database.

Every accepted command and every automatic action is committed, with the events it caused and
the rows of the steps it changed, in one transaction before any reply or prompt is sent. The database lives in
the data directory (`thehat.db`), in WAL mode with `synchronous=FULL`, so a change that was
acknowledged survives a crash of the process or the machine.

`RunStore` is the interface the daemon uses; `SqliteStore` implements it. A store for a shared
server database would implement the same methods.

NOTE: in WAL mode SQLite keeps its index in a memory-mapped file (`thehat.db-shm`). If the file
system refuses writes to that mapping (an immutable file, for instance), the process dies with
SIGBUS instead of getting an error. Every acknowledged change is still in the database and is
restored at the next start.
"""

from __future__ import annotations

import abc
import json
import logging
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from thehat.engine import Modes, Run, RunStep
from thehat.errors import TheHatError
from thehat.events import Event
from thehat.model import StepDef, StepState

log = logging.getLogger(__name__)

DATABASE_NAME: Final = "thehat.db"
# PRAGMA application_id marks the file as ours: "THAT" in ASCII.
APPLICATION_ID: Final = 0x54484154


class StoreError(TheHatError):
    """The store cannot be opened or written; the message names the file and the cause."""


@dataclass
class RunRecord:
    """One run as stored: its flow name, direction, times and steps."""

    run_id: int
    name: str
    active: bool
    failed_step: str | None
    source: str | None
    started_at: datetime
    ended_at: datetime | None
    steps: list[RunStep]
    # None for runs stored before modes were kept, or with unreadable modes.
    modes: Modes | None = None


@dataclass
class JournalEntry:
    """One accepted command, refusal or automatic action, with what it caused."""

    entry_id: int
    run_id: int | None
    flow: str | None
    time: datetime
    actor: str | None
    conversation: str | None
    command: str
    outcome: str
    result: str
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Change:
    """Everything one command or automatic action changed, to commit in one transaction.

    `new_runs` are runs loaded or created by the change, and are stored whole. `runs` maps each
    existing run touched to the names of the steps whose state, owner or times changed.
    `definitions` names the runs whose step definitions were edited, which are stored whole
    again.
    """

    time: datetime
    actor: str | None
    conversation: str | None
    command: str
    outcome: str
    result: str
    events: list[Event] = field(default_factory=list)
    run_name: str | None = None
    new_runs: list[Run] = field(default_factory=list)
    ended_runs: list[Run] = field(default_factory=list)
    runs: dict[str, set[str]] = field(default_factory=dict)
    definitions: set[str] = field(default_factory=set)
    renamed: dict[str, str] = field(default_factory=dict)
    reactivated: dict[str, int] = field(default_factory=dict)
    attachments: dict[str, str | None] = field(default_factory=dict)
    saved: bool = False
    # Names of the runs whose modes (clocks, notifications, idle prompts) changed.
    modes: set[str] = field(default_factory=set)


class RunStore(abc.ABC):
    """The storage interface for runs and the journal. Its methods block, so call them off the
    event loop."""

    @abc.abstractmethod
    def commit(self, change: Change, runs: dict[str, Run]) -> None:
        """Write `change` durably in one transaction; raise StoreError and write nothing if
        that fails. `runs` maps names to the live runs the change refers to."""

    @abc.abstractmethod
    def load_active(self) -> tuple[list[RunRecord], dict[str, str]]:
        """Return every active run and the conversation -> run name attachments."""

    @abc.abstractmethod
    def latest_run(self, name: str, active: bool | None = None) -> RunRecord | None:
        """Return the newest run named `name`; `active` True or False restricts the search to
        active or ended runs."""

    @abc.abstractmethod
    def history(self, flow: str, steps: Sequence[str] = (), limit: int | None = None
                ) -> list[JournalEntry]:
        """Return the journal of every run named `flow`, oldest first (the newest `limit`)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the database."""


# -- encoding ---------------------------------------------------------------------------------

def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def encode_definition(step: StepDef) -> str:
    """Encode a step definition as JSON (its fields but `line`)."""
    fields = asdict(step)
    del fields["line"]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def decode_definition(text: str) -> StepDef:
    fields = json.loads(text)
    for key in ("notify_at_start", "notify_at_finish", "groups", "gates"):
        fields[key] = tuple(fields[key])
    return StepDef(**fields)


def encode_modes(modes: Modes) -> str:
    return json.dumps(asdict(modes), separators=(",", ":"))


def decode_modes(text: str | None) -> Modes | None:
    """Decode stored modes; None for NULL or unreadable modes, so the daemon uses defaults.

    Keys this version does not know are ignored.
    """
    if text is None:
        return None
    try:
        fields = json.loads(text)
        known = {f.name for f in dataclass_fields(Modes)}
        modes = Modes(**{key: value for key, value in fields.items() if key in known})
    except (ValueError, TypeError, AttributeError) as exc:
        log.error("stored run modes %r are unreadable (%s); using the defaults", text, exc)
        return None
    if not (isinstance(modes.clocks, bool) and isinstance(modes.notifications, bool)
            and type(modes.idle_minutes) is int and modes.idle_minutes >= 0):
        log.error("stored run modes %r are invalid; using the defaults", text)
        return None
    return modes


def _events_json(events: list[Event]) -> str:
    """Encode events as a JSON list of {time, kind, step, actor, detail} objects."""
    return json.dumps([{"time": _time(e.time), "kind": e.kind.value, "step": e.step,
                        "actor": e.actor, "detail": dict(e.detail)} for e in events],
                      ensure_ascii=False, default=str, separators=(",", ":"))


# -- schema -----------------------------------------------------------------------------------

SCHEMA_V1: Final = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    active INTEGER NOT NULL,
    failed_step TEXT,
    source TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT
);
CREATE UNIQUE INDEX runs_active_name ON runs(name) WHERE active = 1;
CREATE INDEX runs_name ON runs(name);
CREATE TABLE steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    definition TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT,
    started_at TEXT,
    finished_at TEXT,
    failed_at TEXT,
    reverted_at TEXT,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
CREATE TABLE attachments (
    conversation TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id)
);
CREATE TABLE journal (
    id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs(id),
    flow TEXT,
    time TEXT NOT NULL,
    actor TEXT,
    conversation TEXT,
    command TEXT NOT NULL,
    outcome TEXT NOT NULL,
    result TEXT NOT NULL,
    events TEXT NOT NULL
);
"""
# The events of a journal entry are a JSON list in its row, and the journal has no index:
# then a commit changes about two pages (the journal's last page and the steps' page), which
# keeps it close to the cost of one bare commit. History queries scan the journal, which
# takes milliseconds for the tens of thousands of entries a year of change windows makes.

# Version 2 keeps each run's modes (clock and notification processing, idle prompts) as JSON;
# NULL means the defaults.
SCHEMA_V2: Final = "ALTER TABLE runs ADD COLUMN modes TEXT"

# Forward migrations: entry N brings a database at user_version N to N + 1.
MIGRATIONS: Final[list[str]] = [SCHEMA_V1, SCHEMA_V2]
SCHEMA_VERSION: Final = len(MIGRATIONS)


class SqliteStore(RunStore):
    """The run store in one SQLite file.

    Opening refuses a file that is not a thehat database, or one written by a newer version,
    with a message naming the path; it never overwrites such a file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # Active run name -> (row id, stored failed step), read once and kept in step with
        # every commit; cleared when a commit fails, since that rolls the rows back.
        self._active: dict[str, tuple[int, str | None]] | None = None
        existed = path.exists() and path.stat().st_size > 0
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the run store {path}: {exc}.") from exc
        try:
            self._prepare(existed)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"The run store {path} is unreadable or not a database ({exc}); "
                             "it was left as it is. Move it away to start with an empty "
                             "store, or restore it from a backup.") from exc
        except StoreError:
            self._db.close()
            raise

    def _prepare(self, existed: bool) -> None:
        db = self._db
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if existed and application_id != APPLICATION_ID:
            raise StoreError(f"{self.path} is not a thehat run store (its application id is "
                             f"{application_id:#x}); it was left as it is. Move it away or "
                             "point wfengine.datadir elsewhere.")
        if version > SCHEMA_VERSION:
            raise StoreError(f"The run store {self.path} has schema version {version}, newer "
                             f"than this thehat understands ({SCHEMA_VERSION}); upgrade thehat.")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            log.warning("run store %s is in journal mode %s, not WAL", self.path, mode)
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        for number in range(version, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(MIGRATIONS[number]):
                    db.execute(statement)
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={number + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            log.info("run store %s migrated to schema version %d", self.path, number + 1)

    # -- writing ------------------------------------------------------------------------------

    def commit(self, change: Change, runs: dict[str, Run]) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._write(change, runs)
                db.execute("COMMIT")
            except BaseException:
                self._active = None
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            log.error("committing %r from %s to %s failed: %s", change.command, change.actor,
                      self.path, exc)
            raise StoreError(f"Could not record the change in {self.path}: {exc}.") from exc

    def _write(self, change: Change, runs: dict[str, Run]) -> None:
        db = self._db
        active = self._active_runs()
        for old, new in change.renamed.items():
            db.execute("UPDATE runs SET name = ? WHERE name = ? AND active = 1", (new, old))
            if old in active:
                active[new] = active.pop(old)
        for run in change.ended_runs:
            db.execute("UPDATE runs SET active = 0, ended_at = ? WHERE name = ? AND active = 1",
                       (_time(change.time), run.name))
            db.execute("DELETE FROM attachments WHERE run_id NOT IN "
                       "(SELECT id FROM runs WHERE active = 1)")
            active.pop(run.name, None)
        for name, run_id in change.reactivated.items():
            db.execute("UPDATE runs SET active = 1, ended_at = NULL WHERE id = ?", (run_id,))
            failed = db.execute("SELECT failed_step FROM runs WHERE id = ?",
                                (run_id,)).fetchone()[0]
            active[name] = (run_id, failed)
        for run in change.new_runs:
            cursor = db.execute(
                "INSERT INTO runs (name, active, failed_step, source, started_at, modes) "
                "VALUES (?, 1, ?, ?, ?, ?)",
                (run.name, run.failed_step, run.source, _time(change.time),
                 encode_modes(run.modes)))
            assert cursor.lastrowid is not None
            active[run.name] = (cursor.lastrowid, run.failed_step)
            self._write_steps(cursor.lastrowid, run)
        new_names = {run.name for run in change.new_runs}
        for name, step_names in change.runs.items():
            if name in new_names or name not in runs or name not in active:
                continue
            live = runs[name]
            run_id, stored_failure = active[name]
            if live.failed_step != stored_failure:
                db.execute("UPDATE runs SET failed_step = ? WHERE id = ?",
                           (live.failed_step, run_id))
                active[name] = (run_id, live.failed_step)
            if name in change.definitions:
                db.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
                self._write_steps(run_id, live)
            else:
                db.executemany(
                    "UPDATE steps SET state = ?, owner = ?, started_at = ?, finished_at = ?, "
                    "failed_at = ?, reverted_at = ? WHERE run_id = ? AND name = ?",
                    [(*_step_state(live.steps[step]), run_id, step)
                     for step in step_names if step in live.steps])
        for name in change.modes - new_names:
            if name in runs and name in active:
                db.execute("UPDATE runs SET modes = ? WHERE id = ?",
                           (encode_modes(runs[name].modes), active[name][0]))
        for conversation, attached in change.attachments.items():
            if attached is None or attached not in active:
                db.execute("DELETE FROM attachments WHERE conversation = ?", (conversation,))
            else:
                db.execute("INSERT OR REPLACE INTO attachments (conversation, run_id) "
                           "VALUES (?, ?)", (conversation, active[attached][0]))

        entry = active.get(change.run_name) if change.run_name else None
        journal_run = None if entry is None else entry[0]
        db.execute(
            "INSERT INTO journal (run_id, flow, time, actor, conversation, command, outcome, "
            "result, events) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (journal_run, change.run_name, _time(change.time), _storable(change.actor),
             _storable(change.conversation), _storable(change.command), change.outcome,
             _storable(change.result), _storable(_events_json(change.events))))

    def _write_steps(self, run_id: int | None, run: Run) -> None:
        self._db.executemany(
            "INSERT INTO steps (run_id, name, position, definition, state, owner, started_at, "
            "finished_at, failed_at, reverted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(run_id, step.name, position, encode_definition(step.definition),
              *_step_state(step)) for position, step in enumerate(run.steps.values())])

    def _active_runs(self) -> dict[str, tuple[int, str | None]]:
        if self._active is None:
            self._active = {name: (run_id, failed) for run_id, name, failed in self._db.execute(
                "SELECT id, name, failed_step FROM runs WHERE active = 1")}
        return self._active

    # -- reading ------------------------------------------------------------------------------

    def load_active(self) -> tuple[list[RunRecord], dict[str, str]]:
        rows = self._db.execute(
            "SELECT id, name, active, failed_step, source, started_at, ended_at, modes FROM runs "
            "WHERE active = 1 ORDER BY id").fetchall()
        records = [self._record(row) for row in rows]
        attachments = dict(self._db.execute(
            "SELECT a.conversation, r.name FROM attachments a JOIN runs r ON r.id = a.run_id "
            "WHERE r.active = 1").fetchall())
        return records, attachments

    def latest_run(self, name: str, active: bool | None = None) -> RunRecord | None:
        query = ("SELECT id, name, active, failed_step, source, started_at, ended_at, modes "
                 "FROM runs WHERE name = ?")
        parameters: list[Any] = [name]
        if active is not None:
            query += " AND active = ?"
            parameters.append(int(active))
        row = self._db.execute(query + " ORDER BY id DESC LIMIT 1", parameters).fetchone()
        return None if row is None else self._record(row)

    def _record(self, row: tuple[Any, ...]) -> RunRecord:
        run_id, name, active, failed_step, source, started_at, ended_at, modes = row
        steps = [
            RunStep(decode_definition(definition), StepState(state), owner,
                    _parse_time(started), _parse_time(finished), _parse_time(failed),
                    _parse_time(reverted))
            for definition, state, owner, started, finished, failed, reverted
            in self._db.execute(
                "SELECT definition, state, owner, started_at, finished_at, failed_at, "
                "reverted_at FROM steps WHERE run_id = ? ORDER BY position", (run_id,))
        ]
        return RunRecord(run_id, name, bool(active), failed_step, source,
                         datetime.fromisoformat(started_at), _parse_time(ended_at), steps,
                         decode_modes(modes))

    def history(self, flow: str, steps: Sequence[str] = (), limit: int | None = None
                ) -> list[JournalEntry]:
        query = ("SELECT id, run_id, flow, time, actor, conversation, command, outcome, result, "
                 "events FROM journal WHERE flow = ?")
        parameters: list[Any] = [flow]
        if steps:
            marks = ", ".join("?" for _ in steps)
            # Refusals cause no events, so the command text is searched for the names too.
            words = "' ' || replace(command, ',', ' ') || ' '"
            query += (" AND (EXISTS (SELECT 1 FROM json_each(journal.events) "
                      f"WHERE json_extract(value, '$.step') IN ({marks}))"
                      + "".join(f" OR instr({words}, ' ' || ? || ' ') > 0" for _ in steps)
                      + ")")
            parameters.extend(steps)
            parameters.extend(steps)
        query += " ORDER BY id DESC"
        if limit is not None:
            query += " LIMIT ?"
            parameters.append(limit)
        entries = [
            JournalEntry(entry_id=row[0], run_id=row[1], flow=row[2],
                         time=datetime.fromisoformat(row[3]), actor=row[4],
                         conversation=row[5], command=row[6], outcome=row[7], result=row[8],
                         events=json.loads(row[9]))
            for row in self._db.execute(query, parameters)
        ]
        entries.reverse()
        return entries

    def close(self) -> None:
        self._db.close()


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _storable(text: str | None) -> str | None:
    """Replace lone surrogates, which SQLite cannot store as UTF-8, by U+FFFD.

    A user name or a command line may contain them when a frontend decodes invalid UTF-8
    with `surrogateescape`. The journal keeps the rest of the text.

    >>> _storable("gimme a\\udc80b") == "gimme a\\ufffdb"
    True
    """
    if text is None or text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def _step_state(step: RunStep) -> tuple[Any, ...]:
    return (step.state.value, step.owner, _time(step.started_at), _time(step.finished_at),
            _time(step.failed_at), _time(step.reverted_at))


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


