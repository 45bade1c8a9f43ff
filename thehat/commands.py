"""The command language: a declarative table of command words, their arguments and help.

`execute` parses one line of text from a user, runs the matching handler against the daemon and
returns an `Outcome`: the reply lines for the speaker, the events caused, and the lines that the
other conversations attached to the same run should see. Command words, their arguments and
meanings are the original TheHat's; every command that takes several step or group names
accepts commas, spaces or both between them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from thehat import __version__
from thehat.access import Role, Speaker
from thehat.automation import Launch
from thehat.clocks import CLOCK_PREFIX, PROGRAM_PREFIX, parse_clock_owner
from thehat.engine import NotOwner, Run, UnknownStep
from thehat.errors import CommandError, FlowError, Refusal, TheHatError
from thehat.events import Event
from thehat.model import (MAX_COMMAND_CHARACTERS, MAX_TIMEOUT, StepDef, parse_timeout,
                          text_problem)
from thehat.names import did_you_mean, name_problem
from thehat.status import event_lines, format_table, format_time, status_block
from thehat.typing_marks import normalise_line

if TYPE_CHECKING:
    from thehat.daemon import Daemon

log = logging.getLogger(__name__)

SECTIONS: Final = ("progression", "information", "operations", "editing", "diagnostic")
MAX_NAMES: Final = 200
MAX_SUGGESTIONS: Final = 10


@dataclass
class Outcome:
    """What one command line produced.

    `lines` go to the speaker; `events` and `notices` go to `audience`, the other conversations
    attached to the run the command acted on (filled in by the daemon). `result` is the reply
    without the status block, for the journal; `refusals` counts rejected requests.
    """

    lines: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    run_name: str | None = None
    notices: list[str] = field(default_factory=list)
    status_header: str | None = None
    quit: bool = False
    audience: list[str] = field(default_factory=list)
    result: list[str] = field(default_factory=list)
    refusals: int = 0
    changed_runs: set[str] = field(default_factory=set)
    # Host commands and step mail to start once the change is committed.
    launches: list[Launch] = field(default_factory=list)
    mails: list[object] = field(default_factory=list)
    # Runs that ended or were replaced, whose running programs must stop.
    stopped_runs: set[Run] = field(default_factory=set)
    # The event lines for the other conversations, when they differ from `events`.
    announced: list[str] | None = None


@dataclass
class Context:
    """Everything a handler needs: who speaks where, the arguments, and the daemon."""

    daemon: Daemon
    conversation_id: str
    # The name that owns steps for the speaker (see AccessPolicy.actor).
    user: str
    word: str
    args: str
    outcome: Outcome
    speaker: Speaker
    # The speaker's role for this command, and the flow whose own access entries decided it.
    role: Role
    role_flow: str | None = None
    # The speaker's role outside any flow, which decides what may act on the bot's host.
    host_role: Role = Role.OBSERVER

    @property
    def admin(self) -> bool:
        return self.role >= Role.ADMIN

    @property
    def run(self) -> Run | None:
        return self.daemon.run_for(self.conversation_id)

    def require_run(self) -> Run:
        run = self.run
        if run is None:
            raise CommandError("No flow is loaded here; load one with load <flow> "
                               "(ls lists them) or create one with new <flow>.")
        self.outcome.run_name = run.name
        return run

    def reply(self, *lines: str) -> None:
        self.outcome.lines.extend(lines)

    def emit(self, events: list[Event]) -> None:
        """Record events and announce them to the speaker."""
        self.outcome.events.extend(events)
        self.outcome.lines.extend(event_lines(events))

    def notice(self, line: str) -> None:
        """Tell the other conversations attached to the run (not the speaker)."""
        self.outcome.notices.append(line)


Handler = Callable[[Context], None]


@dataclass(frozen=True)
class Command:
    """One command word: how it is typed, what it does, and who handles it."""

    name: str
    usage: str
    summary: str
    section: str
    handler: Handler
    aliases: tuple[str, ...] = ()
    changes: bool = False
    details: str = ""
    # The role the command needs under an access section.
    role: Role = Role.ADMIN
    # Whether it acts on the bot's host, so needs an admin even without an access section.
    host: bool = False


COMMANDS: dict[str, Command] = {}
_LOOKUP: dict[str, Command] = {}


def command(name: str, usage: str, summary: str, section: str, *, aliases: tuple[str, ...] = (),
            changes: bool = False, details: str = "", role: Role = Role.ADMIN,
            host: bool = False) -> Callable[[Handler], Handler]:
    """Register a handler in the command table under `name` and its aliases.

    A command needs the admin role unless `role` names a lower one.
    """

    def register(handler: Handler) -> Handler:
        entry = Command(name, usage, summary, section, handler, aliases, changes, details,
                        role, host)
        COMMANDS[name] = entry
        for word in (name, *aliases):
            _LOOKUP[word.casefold()] = entry
        return handler

    return register


def lookup(word: str) -> Command | None:
    """Find a command by name or alias, ignoring case."""
    return _LOOKUP.get(word.casefold())


def command_words() -> list[str]:
    """Return every command name and alias, for completion."""
    return sorted({w for c in COMMANDS.values() for w in (c.name, *c.aliases)})


def join_lists(text: str) -> str:
    """Remove the spaces around commas, so a list typed as `a, b` stays one word.

    >>> join_lists("a , b, c")
    'a,b,c'
    """
    return re.sub(r"\s*,\s*", ",", text.strip())


_LEADING_LIST = re.compile(r"\s*([^\s,]+(?:\s*,\s*[^\s,]+)*,?)\s*(.*)", re.DOTALL)


def split_leading_list(text: str) -> tuple[list[str], str]:
    """Split a leading list of names (commas with or without spaces) from the rest of a line.

    >>> split_leading_list("food, hardware bob smith")
    (['food', 'hardware'], 'bob smith')
    """
    match = _LEADING_LIST.fullmatch(text)
    if match is None:
        return [], ""
    return split_names(match.group(1)), match.group(2)


def split_names(text: str) -> list[str]:
    """Split a list of names at commas, whitespace or both.

    >>> split_names("a, b c,,d ")
    ['a', 'b', 'c', 'd']
    """
    return [part for part in re.split(r"[\s,]+", text.strip()) if part]


def execute(daemon: Daemon, conversation_id: str, speaker: Speaker | str, text: str,
            admin: bool = False) -> Outcome:
    """Run one command line from `speaker` in a conversation and return what it produced.

    A plain name for `speaker` stands for a speaker with no identity, an admin when `admin`.
    The line is checked for length and look-alike characters, the speaker's role for the
    command, and only then is the command run. Expected failures become reply lines;
    anything else is logged and answered with a short generic line, so a bug never leaks a
    traceback into a chat room.
    """
    if isinstance(speaker, str):
        speaker = Speaker.plain(speaker, admin)
    outcome = Outcome()
    policy = daemon.config.access
    try:
        text, notes = checked_line(text, daemon.config.limits.max_line_length)
    except CommandError as exc:
        outcome.lines.append(str(exc))
        outcome.refusals += 1
        outcome.result = list(outcome.lines)
        return outcome
    outcome.lines.extend(notes)
    # Any whitespace separates the command word, a tab included; checked_line stripped the
    # line and made wide spaces plain.
    parts = text.split(None, 1)
    word = parts[0] if parts else ""
    args = parts[1] if len(parts) > 1 else ""
    if not word:
        word = "status"
    entry = lookup(word)
    if entry is None:
        outcome.lines.append(f"Unknown command {word!r}{did_you_mean(word, command_words())}; "
                             "say help for the list of commands.")
        outcome.refusals += 1
        outcome.result = list(outcome.lines)
        return outcome

    run = daemon.run_for(conversation_id)
    host_role = policy.role(speaker)
    # The lowest role over the flows the command touches decides.
    decisions = [policy.decide(speaker, flow) for flow in role_flows(entry, args, run)]
    role, role_flow = min(decisions, key=lambda decision: decision[0])
    context = Context(daemon, conversation_id, policy.actor(speaker), word, args.strip(),
                      outcome, speaker, role, role_flow, host_role)
    if run is not None:
        outcome.run_name = run.name
    try:
        check_role(context, entry)
        entry.handler(context)
    except TheHatError as exc:
        outcome.lines.append(str(exc))
        outcome.refusals += 1
    except Exception:
        log.exception("command %r from %s in %s failed", text, speaker.name, conversation_id)
        outcome.lines.append(f"Internal error while running {entry.name}; it was logged. "
                             "The flow state is unchanged unless a line above says otherwise.")
        outcome.refusals += 1
    outcome.result = list(outcome.lines)
    # A request that was only refused changed nothing, so the reason stays the last line.
    refused_only = outcome.refusals and not outcome.events
    if (entry.changes and outcome.status_header is None and context.run is not None
            and not refused_only):
        outcome.status_header = "(status)"
    if outcome.status_header is not None:
        complete = outcome.status_header == "status request"
        outcome.lines.extend(daemon.status(context.run, outcome.status_header, complete))
    return outcome


def checked_line(text: str, max_length: int) -> tuple[str, list[str]]:
    """Refuse an over-long line, make look-alike characters plain; return the notes.

    Raises CommandError naming the length and the limit, or the offending character.
    Whitespace around the command, a line end included, is dropped first; positions in
    messages still count it, so they match the line as typed.
    """
    leading = len(text) - len(text.lstrip())
    text = text.strip()
    if len(text) > max_length:
        raise CommandError(f"The command is {len(text):,} characters long; the limit is "
                           f"{max_length:,} (limits.maxLineLength). Nothing was done.")
    return normalise_line(text, leading)


def named_flow(entry: Command, args: str) -> str | None:
    """Return the flow that load, restore, new or save names in `args`, else None."""
    if entry.name not in ("load", "restore", "new", "save"):
        return None
    names = args.split()
    if entry.name == "save" and len(names) == 2 and names[-1] in FORCE_WORDS:
        names = names[:-1]
    return names[0].removesuffix(".flow") if len(names) == 1 else None


def role_flows(entry: Command, args: str, run: Run | None) -> list[str | None]:
    """Return the flows whose access entries decide `entry` (None: the general entries).

    Host commands are judged outside any flow, because they act beyond it. Load, restore,
    new and save to another name are judged for the flow they name and, when the
    conversation follows another run, for that run too, because they move the conversation
    off it.
    """
    if entry.host:
        return [None]
    named = named_flow(entry, args)
    attached = None if run is None else run.name
    if entry.name in ("load", "restore", "new", "save") and named != attached:
        return [named] if attached is None else [attached, named]
    return [attached]


def needed_role(entry: Command, context: Context, args: str | None = None) -> Role:
    """Return the role `entry` needs from the speaker of `context`.

    Without an access section every command but the host commands is open to operators, as
    in earlier versions. Leaving the terminal is open to its user whatever the role. Joining
    an active run needs an observer in a conversation that follows no run yet, and an
    operator to move a conversation from one run to another. Bringing back an ended run
    needs an admin. `args` are the command's arguments (default: those of `context`).
    """
    if entry.name == "quit" and context.speaker.local:
        return Role.OBSERVER
    if not context.daemon.config.access.configured:
        return Role.ADMIN if entry.host else Role.OPERATOR
    if entry.name in ("load", "restore"):
        named = named_flow(entry, context.args if args is None else args)
        if named is not None and named in context.daemon.runs:
            return joining_role(context, named)
        if entry.name == "restore" and named is not None:
            return Role.ADMIN
    return entry.role


def joining_role(context: Context, flow: str | None = None) -> Role:
    """Return the role that joining running flow `flow` needs: an observer in a conversation
    that follows no run or follows `flow` already, else an operator."""
    run = context.run
    return Role.OBSERVER if run is None or run.name == flow else Role.OPERATOR


def role_for(entry: Command, context: Context) -> Role:
    """Return the speaker's role that decides `entry`: outside any flow for host commands."""
    return context.host_role if entry.host else context.role


def allowed(entry: Command, context: Context) -> bool:
    """Tell whether the speaker may run `entry` in some form, for help.

    Load and restore are listed for every speaker who may join a running flow with them.
    """
    needed = needed_role(entry, context, "")
    if entry.name in ("load", "restore") and context.daemon.config.access.configured:
        needed = min(needed, joining_role(context))
    return role_for(entry, context) >= needed


def check_role(context: Context, entry: Command) -> None:
    """Raise CommandError naming the role `entry` needs when the speaker lacks it.

    A speaker whose name is a clock or program owner may run nothing beyond looking, because
    acting under that name would act as the clock or program (an XMPP room nick may be any
    text).
    """
    needed = needed_role(entry, context)
    if context.role < needed:
        log.info("rejected %s from %s: needs %s, has %s", entry.name,
                 context.speaker.describe(), needed.word, context.role.word)
        raise CommandError(f"{entry.name} needs the {needed.word} role; {who(context)} "
                           f"{context.role.with_article}{where(context)}. "
                           f"{how_to_get(context, needed, context.role_flow)}")
    name = context.user
    if needed > Role.OBSERVER and name.startswith((PROGRAM_PREFIX, CLOCK_PREFIX)):
        log.info("rejected %s from %s: the name is a clock or program owner", entry.name,
                 context.speaker.describe())
        raise CommandError(f"{entry.name} is not allowed under the name {name!r}, which is "
                           "kept for clock and program owners; change your nick and try "
                           "again.")


def require_admin(context: Context, action: str) -> None:
    """Raise CommandError unless the speaker is an admin outside any flow, because `action`
    (named in the message) acts on the bot's host."""
    if context.host_role >= Role.ADMIN:
        return
    raise CommandError(f"Only admins can {action}; {who(context)} "
                       f"{context.host_role.with_article}. "
                       f"{how_to_get(context, Role.ADMIN, None)}")


def who(context: Context) -> str:
    """Name the speaker and their identities for a refusal: `bob (irc:bob, not verified) is`."""
    speaker = context.speaker
    if not speaker.identities:
        return f"{speaker.name} is"
    return f"{speaker.name} ({speaker.describe()}) is"


def where(context: Context) -> str:
    """Name the flow whose own access entries decided the speaker's role, if any did."""
    return f" for flow {context.role_flow}" if context.role_flow is not None else ""


def how_to_get(context: Context, needed: Role, flow: str | None) -> str:
    """Say how the speaker could get the `needed` role, for `flow` when its entries decided."""
    policy = context.daemon.config.access
    if not policy.configured:
        return "Admins are listed in wfengine.admins."
    if policy.require_verified and not context.speaker.verified:
        kinds = {identity.kind for identity in context.speaker.identities}
        if "irc" in kinds:
            how = "log in to your services account (NickServ or SASL)"
        else:
            how = ("speak in a room that shows your JID to the bot, or send the command to the "
                   "bot directly")
        return f"Roles need a verified identity here (access.requireVerified): {how}."
    key = f"access.flows.{flow}.{needed.word}" if flow is not None else f"access.{needed.word}"
    return f"Ask an admin to list you under {key} in the configuration."


def for_each_step(context: Context, names: list[str],
                  action: Callable[[Run, str], list[Event]]) -> None:
    """Apply `action` to each named step; a refusal of one step does not stop the others.

    Raises CommandError for more than MAX_NAMES names, because edits recompute the gates of
    the whole flow for each name. Only the first MAX_SUGGESTIONS unknown names get close-match
    suggestions.
    """
    run = context.require_run()
    if len(names) > MAX_NAMES:
        raise CommandError(f"{len(names)} names in one command; give at most {MAX_NAMES}, or "
                           "use a group (gimmegroup, givegroupto).")
    unknown = 0
    for name in names:
        try:
            context.emit(action(run, name))
        except UnknownStep as exc:
            unknown += 1
            context.reply(str(exc) if unknown <= MAX_SUGGESTIONS else exc.plain_message())
            context.outcome.refusals += 1
        except NotOwner as exc:
            context.reply(exc.message(can_take_over=may_take_any_step(context)))
            context.outcome.refusals += 1
        except (Refusal, FlowError) as exc:
            context.reply(str(exc))
            context.outcome.refusals += 1


def for_named_steps(context: Context, action: Callable[[Run, str], list[Event]]) -> None:
    """Apply `action` to each step named in the arguments; no name is a usage error."""
    names = split_names(context.args)
    if not names:
        raise usage_error(context)
    for_each_step(context, names, action)


def usage_error(context: Context) -> CommandError:
    entry = lookup(context.word)
    assert entry is not None
    return CommandError(f"usage: {entry.usage}")


# -- progression ------------------------------------------------------------------------------

def check_new_owner(context: Context, owner: str | None) -> None:
    """Reject a program owner from a non-admin, and describe a clock owner's time.

    A program owner runs its command line on the bot's host, so only admins may set one.
    """
    if owner is None:
        return
    if owner.startswith(PROGRAM_PREFIX):
        require_admin(context, "give steps to a program, because it runs on the bot's host")
    clock = parse_clock_owner(owner, context.daemon.zone)
    if clock is not None and clock.scheduled is not None:
        when = format_time(clock.scheduled, context.daemon.zone)
        context.outcome.notices.append(f"{owner} acts at {when}.")
        context.reply(f"{owner} acts at {when}, once its step is ready and clock processing "
                      "is on.")


def may_take_any_step(context: Context) -> bool:
    """Tell whether the speaker may take a step from its owner: anyone without an access
    section, else admins only."""
    return not context.daemon.config.access.configured or context.admin


def hand_over(context: Context, run: Run, name: str, owner: str | None) -> list[Event]:
    """Make `owner` the owner of step `name`, if the speaker may move that step.

    Under an access section, operators move only steps that are unassigned or their own.
    Taking a step from another owner (a person, a clock or a program) needs an admin.
    """
    current = run.step(name).owner
    if not may_take_any_step(context) and current not in (None, context.user):
        raise Refusal(f"Step {name} is owned by {current}; as an operator, "
                      f"{context.user} can take or give away only unassigned steps and their "
                      f"own. Ask {current} or an admin to give it away.")
    return run.set_owner(name, owner, context.user)


def hand_over_all(context: Context, run: Run, names: list[str], owner: str | None) -> None:
    """Hand over each of `names`; a refusal of one step does not stop the others."""
    for name in names:
        try:
            context.emit(hand_over(context, run, name, owner))
        except Refusal as exc:
            context.reply(str(exc))
            context.outcome.refusals += 1


@command("gimme", "gimme <step>[,<step>...]", "Take ownership of steps.", "progression",
         changes=True, role=Role.OPERATOR)
def gimme(context: Context) -> None:
    check_new_owner(context, context.user)
    for_named_steps(context, lambda run, n: hand_over(context, run, n, context.user))


@command("giveto", "giveto <owner> <step>[,<step>...]", "Give steps to someone.",
         "progression", changes=True, role=Role.OPERATOR)
def giveto(context: Context) -> None:
    owner, _, rest = context.args.partition(" ")
    names = split_names(rest)
    if not owner or not names:
        raise usage_error(context)
    run = context.require_run()
    if owner in run.steps and not any(name in run.steps for name in names):
        raise CommandError(f"{owner} is a step and {', '.join(names)} is not; the owner comes "
                           f"first: giveto <owner> <step>[,<step>...], for example giveto "
                           f"{names[0]} {owner}.")
    if owner.startswith(PROGRAM_PREFIX) and any(name not in run.steps for name in names):
        # The owner ends at the first space, so "giveto program:echo hi step" would give the
        # step to program:echo and take "hi" for a step.
        unknown = ", ".join(name for name in names if name not in run.steps)
        raise CommandError(f"giveto takes the owner as one word, and {unknown} is not a step; "
                           "nothing changed. To give a step to a program with arguments, say "
                           "set <step> owner program:<command line>.")
    check_new_owner(context, owner)
    for_each_step(context, names, lambda run, n: hand_over(context, run, n, owner))


def give_groups(context: Context, groups: list[str], owner: str) -> None:
    run = context.require_run()
    known = run.groups()
    for group in groups:
        if group not in known:
            context.reply(f"No step is in group {group!r}{did_you_mean(group, known)}.")
            context.outcome.refusals += 1
    steps = run.steps_in_groups(groups)
    if not steps:
        return
    check_new_owner(context, owner)
    context.reply(f"Giving step group(s) {', '.join(g for g in groups if g in known)} to "
                  f"{owner}...")
    hand_over_all(context, run, [step.name for step in steps], owner)


@command("gimmegroup", "gimmegroup <group>[,<group>...]", "Take every step of the groups.",
         "progression", changes=True, role=Role.OPERATOR)
def gimmegroup(context: Context) -> None:
    groups = split_names(context.args)
    if not groups:
        raise usage_error(context)
    give_groups(context, groups, context.user)


@command("givegroupto", "givegroupto <group>[,<group>...] <owner>",
         "Give every step of the groups to someone.", "progression", changes=True,
         details="The owner is the rest of the line after the first word.", role=Role.OPERATOR)
def givegroupto(context: Context) -> None:
    groups, owner = split_leading_list(context.args)
    owner = owner.strip()
    if not groups or not owner:
        raise usage_error(context)
    give_groups(context, groups, owner)


@command("gimmeall", "gimmeall", "Take ownership of every step.", "progression", changes=True,
         role=Role.OPERATOR)
def gimmeall(context: Context) -> None:
    run = context.require_run()
    check_new_owner(context, context.user)
    hand_over_all(context, run, list(run.steps), context.user)


@command("start", "start <step>[,<step>...]", "Start ready steps you own.", "progression",
         changes=True, role=Role.OPERATOR)
def start(context: Context) -> None:
    for_named_steps(context, lambda run, n: run.start(n, context.user))


@command("finish", "finish <step>[,<step>...]", "Finish steps you own, started or not.",
         "progression", changes=True, role=Role.OPERATOR)
def finish(context: Context) -> None:
    for_named_steps(context, lambda run, n: run.finish(n, context.user))


@command("fail", "fail <step>", "Fail a ready or in-progress step and start the reversion.",
         "progression", changes=True,
         details="Steps that never started are excluded, and the failed step stays failed. "
                 "Every other started step must then be reverted, each once the steps after "
                 "it are reverted.", role=Role.OPERATOR)
def fail(context: Context) -> None:
    names = split_names(context.args)
    if len(names) != 1:
        raise usage_error(context)
    for_each_step(context, names, lambda run, n: run.fail(n, context.user))


@command("reverting", "reverting <step>[,<step>...]", "Say you are undoing started steps.",
         "progression", changes=True, role=Role.OPERATOR)
def reverting(context: Context) -> None:
    for_named_steps(context, lambda run, n: run.mark_reverting(n, context.user))


@command("reverted", "reverted <step>[,<step>...]", "Say started steps are undone.",
         "progression", aliases=("revert",), changes=True, role=Role.OPERATOR)
def reverted(context: Context) -> None:
    for_named_steps(context, lambda run, n: run.revert(n, context.user))


# -- information ------------------------------------------------------------------------------

@command("status", "status", "Show the steps that need attention now.", "information",
         details="OWNER is who may change the step (UNASSIGNED: claim it with gimme). STATE is "
                 "'pending' for a step whose gates have all finished, so it can start; 'in "
                 "prog' once started. After a failure, 'pending reversion' marks a finished "
                 "step to undo now, 'in prog, revert' a started one to stop and undo, "
                 "'reverting' one being undone. DUR is minutes since the start. After a "
                 "change the table shows at most wfengine.statusRows steps; status shows all.",
         role=Role.OBSERVER)
def status(context: Context) -> None:
    context.outcome.status_header = "status request"
    if context.run is None:
        context.reply(*context.daemon.status(None, ""))
        context.outcome.status_header = None


@command("list", "list", "List every step with its groups, owner and description.",
         "information", role=Role.OBSERVER)
def list_steps(context: Context) -> None:
    run = context.require_run()
    rows = [("NAME", "STATE", "OWNER", "GROUPS", "DESCRIPTION")]
    for step in sorted(run.steps.values(), key=lambda s: s.name):
        rows.append((step.name, step.state.display(run.reverting), step.owner or "",
                     ", ".join(step.definition.groups), step.definition.description or ""))
    context.reply(*format_table(rows) if len(rows) > 1 else ["The flow has no steps."])


@command("dump", "dump", "Show every step with all its fields, state and times.",
         "information", role=Role.OBSERVER)
def dump(context: Context) -> None:
    from renderers.text import render_text

    run = context.require_run()
    context.reply(*render_text(run, context.daemon.zone).splitlines())


@command("date", "date", "Show the engine's time.", "information", aliases=("time",),
         role=Role.OBSERVER)
def date(context: Context) -> None:
    context.reply(f"Workflow engine time is: {format_time(context.daemon.clock.now(), context.daemon.zone)}")


@command("version", "version", "Show the version of thehat.", "information", role=Role.OBSERVER)
def version(context: Context) -> None:
    context.reply(f"thehat version {__version__}")


@command("hello", "hello", "Say hello.", "information", aliases=("hi", "howdee", "ping"),
         role=Role.OBSERVER)
def hello(context: Context) -> None:
    context.reply(f"Hello {context.user}!  I am a workflow engine. Please ask me for help if "
                  "you have any questions.",
                  "I accept commands of the form <command> [<param1>[...<paramN>]]")


@command("help", "help [<command>]", "List the commands, or explain one.", "information",
         role=Role.OBSERVER)
def help_command(context: Context) -> None:
    word = context.args.split()[0] if context.args.split() else ""
    if word:
        entry = lookup(word)
        if entry is None:
            raise CommandError(f"No command {word!r}{did_you_mean(word, command_words())}.")
        context.reply(f"usage: {entry.usage}", entry.summary)
        if entry.details:
            context.reply(entry.details)
        if entry.aliases:
            context.reply("Also: " + ", ".join(entry.aliases))
        role = role_for(entry, context)
        needed = needed_role(entry, context, "")
        if entry.name in ("load", "restore") and context.daemon.config.access.configured:
            context.reply("Joining a running flow needs the observer role in a conversation "
                          "that follows no run, else the operator role; starting a run or "
                          "bringing back an ended one needs the admin role.")
        elif role < needed:
            where_text = where(context) if not entry.host else ""
            context.reply(f"It needs the {needed.word} role; {who(context)} "
                          f"{role.with_article}{where_text}.")
        return
    hidden = 0
    for section in SECTIONS:
        entries = sorted((c for c in COMMANDS.values() if c.section == section),
                         key=lambda c: c.name)
        hidden += len(entries)
        entries = [c for c in entries if allowed(c, context)]
        hidden -= len(entries)
        if not entries:
            continue
        context.reply(f"{section}:")
        context.reply(*("  " + line for line in format_table(
            [(c.usage, c.summary) for c in entries])))
    context.reply("Say help <command> for details. Step and group lists take commas, spaces "
                  "or both.")
    if hidden:
        context.reply(f"{hidden} more commands need a role above {context.role.word}"
                      f"{where(context)}, so they are not listed.")


HISTORY_LIMIT: Final = 20


@command("history", "history [<step>...]",
         "Show the recent audit entries of the attached flow, or of some steps.", "information",
         details=f"Shows the newest {HISTORY_LIMIT} entries; 'thehat history FLOW' on the "
                 "host exports all of them.", role=Role.OBSERVER)
def history(context: Context) -> None:
    run = context.require_run()
    context.reply(*context.daemon.history(run.name, split_names(context.args), HISTORY_LIMIT))


@command("report", "report", "Show the change record of the attached flow, step by step.",
         "information",
         details="Owner, planned order, actual start and finish, duration, failure and "
                 "reversion of every step; 'thehat report FLOW --format csv' gives CSV.",
         role=Role.OBSERVER)
def report(context: Context) -> None:
    run = context.require_run()
    context.reply(*context.daemon.report(run.name))


# -- operations -------------------------------------------------------------------------------

@command("ls", "ls", "List the flow files in the data directory.", "operations",
         details="With version control configured, the VCS column gives each file's status: "
                 "unchanged, modified, added, untracked, conflict or ignored.", role=Role.OBSERVER)
def ls(context: Context) -> None:
    flows = context.daemon.datadir.list_flows()
    if not flows:
        context.reply(f"No flow files in {context.daemon.datadir.root} yet; save one with "
                      "save <name>.")
        return
    words, problem = vcs_words(context)
    header = ["NAME", "SIZE", "MODIFIED", "RUN"]
    rows = [header + ["VCS"] if words is not None else header]
    for info in flows:
        active = "active" if info.name in context.daemon.runs else ""
        row = [info.name, str(info.size), format_time(info.modified, context.daemon.zone),
               active]
        if words is not None:
            row.append(words.get(info.name + ".flow", "?"))
        rows.append(row)
    context.reply(*format_table(rows))
    if problem is not None:
        context.reply(f"Version control: {problem}")


def vcs_words(context: Context) -> tuple[dict[str, str] | None, str | None]:
    """Return the status word of each flow file, or None and why there are none.

    Both are None when no version control is configured.
    """
    daemon = context.daemon
    if daemon.vcs is None:
        return None, daemon.vcs_problem
    try:
        return daemon.vcs.status(), None
    except CommandError as exc:
        return None, str(exc)


@command("load", "load <flow>", "Load a flow from the data directory and attach here.",
         "operations",
         details="If the flow is already running, this conversation joins that run; use "
                 "reload to start it over from its file.")
def load(context: Context) -> None:
    names = context.args.split()
    if len(names) != 1:
        raise usage_error(context)
    context.daemon.load(context, names[0], fresh=False)


@command("reload", "reload", "Start the attached flow over from its file.", "operations")
def reload(context: Context) -> None:
    run = context.require_run()
    context.daemon.load(context, run.name, fresh=True)


@command("unload", "unload", "End the attached run and detach every conversation from it.",
         "operations")
def unload(context: Context) -> None:
    run = context.require_run()
    context.daemon.unload(run.name)
    context.outcome.stopped_runs.add(run)
    context.reply(f"Unloaded flow {run.name}; all steps, states and modes cleared.")
    context.notice(f"{context.user} unloaded flow {run.name}; load a flow to continue.")


@command("restore", "restore <flow>", "Attach here to a run of the flow that is active.",
         "operations", role=Role.OPERATOR)
def restore(context: Context) -> None:
    names = context.args.split()
    if len(names) != 1:
        raise usage_error(context)
    context.daemon.restore(context, names[0])


@command("new", "new <flow>", "Create an empty flow and attach here.", "editing")
def new(context: Context) -> None:
    names = context.args.split()
    if len(names) != 1:
        raise usage_error(context)
    context.daemon.new(context, names[0])


@command("save", "save [<flow> [force]]",
         "Save the attached flow, optionally under a new name.", "editing",
         details="Saves current owners and gates into <datadir>/<flow>.flow, atomically. "
                 "Under a new name the run takes that name; an existing file of that name is "
                 "replaced only with 'force'.")
def save(context: Context) -> None:
    words = context.args.split()
    force = bool(words) and words[-1] in FORCE_WORDS
    if force:
        words = words[:-1]
    if len(words) > 1:
        raise usage_error(context)
    context.daemon.save(context, words[0] if words else None, force)


@command("dryrun", "dryrun [<step to fail>]",
         "Simulate the rest of the run on a copy, optionally failing one step.", "diagnostic",
         details="The live run is not changed: owners, states and times stay as they are.",
         role=Role.OBSERVER)
def dryrun(context: Context) -> None:
    from thehat.simulation import simulate

    names = split_names(context.args)
    if len(names) > 1:
        raise usage_error(context)
    run = context.require_run()
    context.reply(*simulate(run, names[0] if names else None))


@command("quit", "quit", "Leave (the terminal) or stop the bot.", "operations",
         aliases=("shutdown", "exit"), host=True)
def quit_command(context: Context) -> None:
    if not context.speaker.local:
        log.info("%s stops the bot from %s", context.speaker.describe(), context.conversation_id)
    context.outcome.quit = True
    context.reply("Bye.")


# -- editing ----------------------------------------------------------------------------------

@command("addstep", "addstep <step>[,<step>...]", "Add pending, unassigned steps.", "editing",
         changes=True)
def addstep(context: Context) -> None:
    for_named_steps(context, lambda run, n: run.add_step(StepDef(n), context.user))


@command("addsequence", "addsequence <step>[,<step>...] [<gate>[,<gate>...]]",
         "Add steps that run one after another, optionally gated on existing steps.", "editing",
         changes=True)
def addsequence(context: Context) -> None:
    parts = join_lists(context.args).split()
    if not parts or len(parts) > 2:
        raise usage_error(context)
    run = context.require_run()
    names = split_names(parts[0])
    heads = split_names(parts[1]) if len(parts) == 2 else []
    missing = [h for h in heads if h not in run.steps]
    if missing:
        raise CommandError("; ".join(f"Step {m} does not exist{did_you_mean(m, run.steps)}"
                                     for m in missing) + " - nothing added.")
    previous: tuple[str, ...] = tuple(heads)
    for name in names:
        try:
            context.emit(run.add_step(StepDef(name, gates=previous), context.user))
        except (Refusal, FlowError) as exc:
            context.outcome.refusals += 1
            context.reply(str(exc), "The rest of the sequence was not added.")
            return
        previous = (name,)


@command("delstep", "delstep <step>[,<step>...] [force]", "Delete steps.", "editing",
         changes=True,
         details="A step that other steps gate on is kept unless you add 'force' "
                 "(or --force); then the gates on it are dropped too.")
def delstep(context: Context) -> None:
    names = split_names(context.args)
    run = context.require_run()
    # A last word 'force' is the option unless it is the only word and names a step.
    force = bool(names) and names[-1] in FORCE_WORDS and not (
        len(names) == 1 and names[0] in run.steps)
    if force:
        names = names[:-1]
    if not names:
        raise usage_error(context)
    for_each_step(context, names, lambda run, n: run.remove_step(n, context.user, force=force))


FORCE_WORDS: Final = ("force", "--force", "-f")
SET_PROPERTIES: Final = (
    "name", "owner", "description", "url", "note", "startCommand", "finishCommand",
    "revertCommand", "timeout", "notifyAtStart", "notifyAtFinish", "group", "groups",
    "addgroup", "delgroup", "gate", "gates", "addgate", "delgate",
)
_TEXT_PROPERTIES: Final = {
    "description": "description", "url": "url", "note": "note",
    "startcommand": "start_command", "finishcommand": "finish_command",
    "revertcommand": "revert_command",
}
_COMMAND_PROPERTIES: Final = frozenset({"startcommand", "finishcommand", "revertcommand"})


@command("set", "set <step>[,<step>...] <property> [<value>]", "Change a property of steps.",
         "editing", changes=True,
         details="Properties: " + " ".join(SET_PROPERTIES) + ". The value is the rest of the "
                 "line; an empty value clears the property. Lists take commas or spaces.")
def set_property(context: Context) -> None:
    names, rest = split_leading_list(context.args)
    parts = rest.split(None, 1)
    if not names or not parts:
        raise usage_error(context)
    prop = parts[0]
    value = parts[1].strip() if len(parts) == 2 else ""
    if prop.casefold() not in {p.casefold() for p in SET_PROPERTIES}:
        raise CommandError(f"{prop!r} is not a step property{did_you_mean(prop, SET_PROPERTIES)};"
                           f" properties: {', '.join(SET_PROPERTIES)}.")
    if prop.casefold() == "name" and len(names) != 1:
        raise CommandError("set ... name renames one step at a time.")
    if prop.casefold() in _COMMAND_PROPERTIES:
        require_admin(context, f"set {prop}, because it runs on the bot's host (or edit the "
                               "flow file instead)")
    if prop.casefold() == "owner":
        check_new_owner(context, value or None)
    before = len(context.outcome.events) + context.outcome.refusals
    for_each_step(context, names, lambda run, n: set_one(run, n, prop.casefold(), value,
                                                        context.user))
    if len(context.outcome.events) + context.outcome.refusals == before:
        context.reply(f"Nothing changed: {prop} already has that value.")


def _seconds(value: str) -> float:
    seconds = parse_timeout(value)
    if seconds is None:
        raise Refusal(f"The timeout {value!r} is not a number of seconds greater than 0 and at "
                      f"most {MAX_TIMEOUT}; give one, such as 300, or nothing to use the "
                      "default.")
    return seconds


def set_one(run: Run, name: str, prop: str, value: str, actor: str) -> list[Event]:
    """Apply one `set` to one step; `prop` is the case-folded property word."""
    step = run.step(name)
    if prop == "name":
        return run.rename_step(name, value, actor)
    if prop == "owner":
        return run.set_owner(name, value or None, actor)
    if prop in _TEXT_PROPERTIES:
        return run.update_step(name, actor, **{_TEXT_PROPERTIES[prop]: value or None})
    if prop == "timeout":
        return run.update_step(name, actor, timeout=_seconds(value) if value else None)
    if prop in ("notifyatstart", "notifyatfinish"):
        attribute = "notify_at_start" if prop == "notifyatstart" else "notify_at_finish"
        return run.update_step(name, actor, **{attribute: tuple(split_names(value))})

    items = split_names(value)
    attribute = "gates" if "gate" in prop else "groups"
    current = list(getattr(step.definition, attribute))
    if prop.startswith("add"):
        new = current + [i for i in items if i not in current]
    elif prop.startswith("del"):
        missing = [i for i in items if i not in current]
        if missing:
            kind = "gate" if attribute == "gates" else "group"
            raise Refusal(f"Step {name} has no {kind} {', '.join(missing)}; nothing changed.")
        new = [i for i in current if i not in items]
    else:
        new = list(dict.fromkeys(items))
    if attribute == "groups":
        for group in new:
            problem = name_problem(group, "group name")
            if problem is not None:
                raise Refusal(problem[0].upper() + problem[1:] + ".")
    return run.update_step(name, actor, **{attribute: tuple(new)})


# -- automation -------------------------------------------------------------------------------

ON_WORDS: Final = ("on", "true")
OFF_WORDS: Final = ("off", "false")
MAX_IDLE_MINUTES: Final = 24 * 60


def _switch(context: Context, attribute: str, label: str) -> None:
    """Show or change one mode of the attached run (`clocks` or `notifications`)."""
    run = context.require_run()
    word = context.args.strip().casefold()
    current = getattr(run.modes, attribute)
    if not word:
        context.reply(f"{label} is {'on' if current else 'off'} for flow {run.name}. To "
                      f"change it, say {context.word} on or {context.word} off.")
        return
    if word not in ON_WORDS + OFF_WORDS:
        raise CommandError(f"{context.word} takes on or off (or true or false), not "
                           f"{context.args.strip()!r}; {label.lower()} is still "
                           f"{'on' if current else 'off'}.")
    _set_mode(context, run, attribute, label, word in ON_WORDS)


def _set_mode(context: Context, run: Run, attribute: str, label: str, value: bool) -> None:
    setattr(run.modes, attribute, value)
    context.daemon.modes_changed(run)
    line = f"{label} {'enabled' if value else 'disabled'} for flow {run.name}."
    context.reply(line)
    context.notice(f"{context.user}: {line}")
    if attribute == "notifications" and value and context.daemon.config.smtp is None:
        context.reply("Note: the configuration has no smtp section, so no mail can be sent; "
                      "steps with recipients will say so when they start or finish.")
    if attribute == "clocks" and value and not context.daemon.config.engine.allow_exec:
        programs = [s.name for s in run.steps.values() if s.owner is not None
                    and s.owner.startswith(PROGRAM_PREFIX)]
        if programs:
            context.reply(f"Note: wfengine.allowExec is false, so the programs that own "
                          f"{', '.join(programs[:MAX_SUGGESTIONS])} will not run.")


@command("clockProcessing", "clockProcessing [on|off]",
         "Show or switch whether clock and program owners act in this flow.", "operations",
         details="Off after load and reload. When on, the bot checks every second: clocks "
                 "start and finish their steps when their time comes, and program owners run "
                 "their command once their step is ready.")
def clock_processing(context: Context) -> None:
    _switch(context, "clocks", "Clock processing")


@command("notificationProcessing", "notificationProcessing [on|off]",
         "Show or switch whether this flow sends step mail.", "operations",
         details="Off after load and reload. When on, a step with notifyAtStart or "
                 "notifyAtFinish addresses sends mail through the smtp section of the "
                 "configuration when it starts or finishes. Switch it on before clocks, or "
                 "clock-driven steps send no mail.")
def notification_processing(context: Context) -> None:
    _switch(context, "notifications", "Notification processing")


@command("run", "run", "Switch notification and clock processing on for this flow.",
         "operations")
def run_command(context: Context) -> None:
    run = context.require_run()
    _set_mode(context, run, "notifications", "Notification processing", True)
    _set_mode(context, run, "clocks", "Clock processing", True)


@command("stop", "stop", "Switch clock and notification processing off for this flow.",
         "operations", details="Programs already running go on; their result is applied.")
def stop_command(context: Context) -> None:
    run = context.require_run()
    _set_mode(context, run, "notifications", "Notification processing", False)
    _set_mode(context, run, "clocks", "Clock processing", False)


@command("idleprompt", "idleprompt [<minutes>]",
         "Show or set after how many quiet minutes the status is posted again.", "operations",
         details="Quiet means no status block was shown in this flow for that long while "
                 "steps need attention. 0 turns idle prompts off. The default comes from "
                 "wfengine.idlePrompt (5 minutes).")
def idleprompt(context: Context) -> None:
    run = context.require_run()
    text = context.args.strip()
    if text:
        if not (text.isascii() and text.isdecimal()) or int(text) > MAX_IDLE_MINUTES:
            raise CommandError(f"idleprompt takes whole minutes from 0 to {MAX_IDLE_MINUTES}, "
                               f"not {text!r}; 0 turns idle prompts off.")
        run.modes.idle_minutes = int(text)
        context.daemon.modes_changed(run)
    minutes = run.modes.idle_minutes
    if minutes:
        unit = "minute" if minutes == 1 else "minutes"
        context.reply(f"Idle prompting is set to {minutes} {unit} for flow {run.name}.",
                      "To change it say idleprompt <minutes>; idleprompt 0 turns it off.")
    else:
        context.reply(f"Idle prompting is off for flow {run.name}: I speak only when a state "
                      "changes.")
        if text:
            context.reply("Without idle prompts your team may hear of a step's change only "
                          "once. To turn them on, say idleprompt <minutes>.")


@command("tictoc", "tictoc", "Let the clocks and programs of this flow act now.", "operations",
         changes=True,
         details="Acts even when clock processing is off, once; clocks whose time has not "
                 "come wait.", role=Role.OPERATOR)
def tictoc(context: Context) -> None:
    run = context.require_run()
    context.reply("(---tictoc---)")
    result = context.daemon.plan_automatic(run, forced=True)
    context.emit(result.events)
    context.outcome.launches.extend(result.launches)
    for line in result.notices:
        context.reply(line)
        context.notice(line)
    if result.events:
        context.outcome.status_header = "CLOCK ADVANCE"
    else:
        context.reply("No clock or program was due.")


@command("exec", "exec <command>", "Run a shell command on the bot's host (admins only).",
         "diagnostic",
         details="Needs wfengine.allowExec: true and the admin role (the terminal's user "
                 "is an admin unless the access section says otherwise). The command runs through /bin/sh with a "
                 "timeout (wfengine.commandTimeout), and its output and exit status follow as "
                 "they come.", host=True)
def exec_command(context: Context) -> None:
    command_line = context.args.strip()
    if not command_line:
        raise usage_error(context)
    problem = text_problem(command_line, MAX_COMMAND_CHARACTERS)
    if problem is not None:
        raise CommandError(f"The command {problem}; nothing was run.")
    engine = context.daemon.config.engine
    if not engine.allow_exec:
        raise CommandError("exec is not allowed: wfengine.allowExec is false in the "
                           "configuration.")
    run = context.run
    context.outcome.launches.append(Launch(
        "exec", run.name if run else None, None, command_line,
        {"THEHAT_USER": context.user, "THEHAT_FLOW": run.name if run else ""},
        engine.command_timeout, origin=context.conversation_id, actor=context.user))
    context.reply(f"Running on the bot's host (timeout {engine.command_timeout:g} s): "
                  f"{command_line}")


# -- version control --------------------------------------------------------------------------

DEFAULT_COMMIT_MESSAGE: Final = "Update from thehat"
MAX_COMMIT_MESSAGE: Final = 2000


def runs_unlike_files(context: Context, path: str) -> list[str]:
    """Return the active runs whose flow file is under `path` and differs from the run's
    definition (steps, gates and owners), because of edits in chat or of a new file."""
    from thehat.flowfile import load_flow
    from thehat.vcs.base import is_under

    root = context.daemon.datadir.root.resolve()
    names = []
    for run in context.daemon.runs.values():
        if run.source is None or root not in Path(run.source).parents:
            continue
        if not is_under(Path(run.source).relative_to(root).as_posix(), path):
            continue
        try:
            same = load_flow(run.source) == run.flow()
        except (TheHatError, OSError):
            same = False
        if not same:
            names.append(run.name)
    return sorted(names)


@command("checkout", "checkout <path> [<branch>]",
         "Take flow files from version control into the data directory (admins only).",
         "operations",
         details="The path is relative to the data directory; '.' is all of it. The first "
                 "checkout makes the data directory a working copy of wfengine.vcs.root. After "
                 "that, the repository's latest version of the path replaces the local one, "
                 "local changes included, which is why only admins may use it. 'checkout . <branch>' switches the data directory to another branch. "
                 "Active runs go on from memory; say reload to use the new file.", host=True)
def checkout(context: Context) -> None:
    words = context.args.split()
    if not words or len(words) > 2:
        raise usage_error(context)
    vcs = context.daemon.version_control()
    path = vcs.checked_path(words[0])
    context.reply(*vcs.checkout(path, words[1] if len(words) == 2 else None))
    differing = runs_unlike_files(context, path)
    if differing:
        context.reply(f"The active runs of {', '.join(differing)} differ from their files now "
                      "and go on as they are; say reload in their conversations to start over "
                      "from the files.")


@command("commit", "commit <path> [<message>]",
         "Commit flow files of the data directory to version control (admins only).",
         "operations",
         details="The path is relative to the data directory ('.' is all of it); the message "
                 f"is the rest of the line (default: {DEFAULT_COMMIT_MESSAGE}). New files under "
                 "the path are added; deleted files are never deleted from the repository, and "
                 "thehat's run store is never committed. Git commits are pushed at once. A "
                 "commit records the files as last saved: say save first to include changes "
                 "made in chat. Only admins may commit.", host=True)
def commit(context: Context) -> None:
    words = context.args.split(None, 1)
    if not words:
        raise usage_error(context)
    vcs = context.daemon.version_control()
    message = words[1].strip() if len(words) == 2 else DEFAULT_COMMIT_MESSAGE
    problem = text_problem(message, MAX_COMMIT_MESSAGE)
    if problem is not None:
        raise CommandError(f"The commit message {problem}; nothing was committed.")
    path = vcs.checked_path(words[0])
    context.reply(*vcs.commit(path, message, context.user))
    unsaved = runs_unlike_files(context, path)
    if unsaved:
        context.reply(f"Note: the active runs of {', '.join(unsaved)} have changes made in chat "
                      "since their last save, which are not in the files and so were not "
                      "committed; say save, then commit again, to include them.")
