"""Access control: speakers, their identities, and the roles of the `access` section.

A frontend describes each speaker as a `Speaker`: a display name and the identities the medium
gives it, each marked verified or not. `tty:alice` is the local login. `irc:nick` is never
verified, because anyone may take a free nick. `irc-account:alice` is verified when the server
vouched for the services account, and `xmpp:alice@example.org` is the real JID a room disclosed.

The `access` section maps identities to the roles observer < operator < admin, for every flow
and per flow:

    access:
      default: observer          # the role of speakers listed nowhere
      requireVerified: true      # unverified speakers are observers
      admin: [tty:alice, irc-account:alice, xmpp:alice@example.org]
      operator: [irc-account:bob]
      flows:
        db-upgrade:
          operator: [irc-account:carol]

Without the section nothing changes from earlier versions: every speaker is an operator who
may run every command except the host commands, and the admins are those in
`wfengine.admins`, as each frontend matches them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from thehat.errors import ConfigError

log = logging.getLogger(__name__)

SECTION: Final = "access"
ROLE_KEYS: Final = ("observer", "operator", "admin")
SECTION_KEYS: Final = frozenset({*ROLE_KEYS, "default", "requireVerified", "flows"})
# The kinds of identity, as written before the first colon.
KINDS: Final = ("tty", "irc", "irc-account", "xmpp")
# The meaning of each kind, for error messages.
KIND_MEANINGS: Final = {
    "tty": "the login name of a terminal user",
    "irc": "an IRC nick (never verified)",
    "irc-account": "an IRC services account the server confirms",
    "xmpp": "a bare XMPP JID such as alice@example.org",
}
# The default IRC nick folding (RFC 1459), in which []\~ are the upper case of {}|^.
_IRC_FOLD: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^")


class Role(enum.IntEnum):
    """The roles, in order: each may do everything the ones below it may."""

    OBSERVER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def word(self) -> str:
        return self.name.lower()

    @property
    def with_article(self) -> str:
        """`an observer`, `an operator`, `an admin`."""
        return f"an {self.word}"

    @classmethod
    def parse(cls, text: str) -> Role | None:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            return None


@dataclass(frozen=True)
class Identity:
    """One identity of a speaker, such as `irc-account:alice`, and whether it is verified."""

    kind: str
    value: str
    verified: bool = False

    @property
    def key(self) -> str:
        """The identity as the access section writes it, folded for comparison."""
        return identity_key(self.kind, self.value)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class Speaker:
    """The sender of a command line, as the frontend identified them.

    `name` is how the medium names the speaker (the login, the nick). `local` marks the
    terminal's user. `listed_admin` is true when the frontend matched the speaker to
    `wfengine.admins`, which decides the admins when there is no access section.
    """

    name: str
    identities: tuple[Identity, ...] = ()
    local: bool = False
    listed_admin: bool = False
    # Where the speaker connects from (IRC `user@host`), which outlasts a nick change.
    origin: str | None = None

    @classmethod
    def terminal(cls, login: str) -> Speaker:
        """Return the user of the terminal: verified by the operating system, and an admin."""
        return cls(login, (Identity("tty", login, verified=True),), local=True, listed_admin=True)

    @classmethod
    def plain(cls, name: str, admin: bool = False) -> Speaker:
        """Return a speaker with a name and no identity, as tests and scripts use."""
        return cls(name, listed_admin=admin)

    @property
    def verified(self) -> tuple[Identity, ...]:
        return tuple(i for i in self.identities if i.verified)

    def describe(self) -> str:
        """Name the identities for a refusal: `irc:bob, not verified; irc-account:bob`."""
        if not self.identities:
            return self.name
        return "; ".join(f"{i}" if i.verified else f"{i}, not verified" for i in self.identities)


def identity_key(kind: str, value: str) -> str:
    """Fold an identity for comparison as its medium does.

    >>> identity_key("irc", "Bob[m]"), identity_key("xmpp", "Alice@Example.org")
    ('irc:bob{m}', 'xmpp:alice@example.org')
    """
    if kind in ("irc", "irc-account"):
        return f"{kind}:{value.translate(_IRC_FOLD)}"
    if kind == "xmpp":
        return f"{kind}:{value.casefold()}"
    return f"{kind}:{value}"


@dataclass(frozen=True)
class AccessPolicy:
    """The roles of the access section, or the earlier behaviour when `configured` is false."""

    configured: bool = False
    require_verified: bool = False
    default: Role = Role.OBSERVER
    roles: Mapping[str, Role] = field(default_factory=dict)
    flows: Mapping[str, Mapping[str, Role]] = field(default_factory=dict)

    def role(self, speaker: Speaker, flow: str | None = None) -> Role:
        """Return the role of `speaker`, for `flow` when given."""
        return self.decide(speaker, flow)[0]

    def decide(self, speaker: Speaker, flow: str | None = None) -> tuple[Role, str | None]:
        """Return the role of `speaker` for `flow`, and that flow when its own entries
        decided the role (None when the general entries or the default did)."""
        if not self.configured:
            return (Role.ADMIN if speaker.listed_admin else Role.OPERATOR), None
        candidates = speaker.verified if self.require_verified else self.matchable(speaker)
        if self.require_verified and not candidates:
            return Role.OBSERVER, None
        keys = [identity.key for identity in candidates]
        if flow is not None and flow in self.flows:
            found = [self.flows[flow][key] for key in keys if key in self.flows[flow]]
            if found:
                return max(found), flow
        found = [self.roles[key] for key in keys if key in self.roles]
        return (max(found) if found else self.default), None

    @staticmethod
    def matchable(speaker: Speaker) -> tuple[Identity, ...]:
        """Return the identities that count when verification is not required. A services
        account counts only when the server confirmed it; every other identity counts."""
        return tuple(i for i in speaker.identities if i.kind != "irc-account" or i.verified)

    def actor(self, speaker: Speaker) -> str:
        """Return the name that owns steps for `speaker`, the one ownership checks compare.

        When verified identities are required, that is the verified account (IRC) or the
        real bare JID (XMPP), so a nick alone cannot act as another person. Otherwise it is
        the name the medium shows.
        """
        if self.configured and self.require_verified:
            for identity in speaker.verified:
                if identity.kind in ("irc-account", "xmpp"):
                    # Folded as the medium compares, so `Alice` owns the steps of `alice`.
                    return identity.key.split(":", 1)[1]
        return speaker.name

    def summary(self) -> str:
        """Return one line on how roles are decided, for the start-up log."""
        if not self.configured:
            return ("no access section: every speaker is an operator, and the admins are the "
                    "terminal's user and those listed in wfengine.admins")
        verified = "verified identities only" if self.require_verified else "any identity"
        return (f"access section: identities with roles: {len(self.roles)}, flows with roles "
                f"of their own: {len(self.flows)}, default role {self.default.word}, roles "
                f"apply to {verified}")

    def warnings(self) -> list[str]:
        """Return the mistakes in the section that leave it working but surely not as meant."""
        if not self.configured:
            return []
        problems = []
        if Role.ADMIN not in self.roles.values() and self.default is not Role.ADMIN:
            problems.append("the access section lists no admin, so nobody can load flows, "
                            "stop the bot or change settings from chat or the terminal; add "
                            "identities under access.admin")
        if self.require_verified:
            unverifiable = sorted(key for table in (self.roles, *self.flows.values())
                                  for key in table if key.startswith("irc:"))
            if unverifiable:
                problems.append(f"access.requireVerified is true, so the nick entries "
                                f"{', '.join(dict.fromkeys(unverifiable))} never match; list "
                                "services accounts as irc-account:<name> instead")
        return problems


def parse_access_section(section: Any, source: str) -> AccessPolicy:
    """Validate the `access` section; ConfigError names the key, the value and what to write."""
    from frontends.config_values import mapping_value
    from thehat.datadir import flow_name_problem

    if section is None:
        section = {}
    mapping_value(section, SECTION, SECTION_KEYS, source)
    default = Role.OBSERVER
    if section.get("default") is not None:
        parsed = Role.parse(str(section["default"]))
        if parsed is None:
            raise ConfigError(f"{source}: {SECTION}.default is {section['default']!r}; use "
                              f"{', '.join(ROLE_KEYS)}")
        default = parsed
    require_verified = False
    if section.get("requireVerified") is not None:
        from thehat.config import parse_bool

        require_verified = parse_bool(section["requireVerified"], f"{SECTION}.requireVerified",
                                      source)
    roles = _role_table(section, SECTION, source)
    flows: dict[str, dict[str, Role]] = {}
    raw_flows = section.get("flows") or {}
    if not isinstance(raw_flows, dict):
        raise ConfigError(f"{source}: {SECTION}.flows must map flow names to role lists, "
                          f"such as  db-upgrade: {{operator: [irc-account:carol]}}")
    for raw_flow, table in raw_flows.items():
        # Flows are named as load names them, so `toast.flow` means the flow toast.
        flow = str(raw_flow).strip().removesuffix(".flow")
        key = f"{SECTION}.flows.{raw_flow}"
        problem = flow_name_problem(flow)
        if problem is not None:
            raise ConfigError(f"{source}: {key} is not a flow name: {problem}; write the name "
                              "as load takes it, such as db-upgrade")
        if flow in flows:
            raise ConfigError(f"{source}: {key} repeats flow {flow}; keep its roles in one "
                              "entry")
        mapping_value(table, key, frozenset(ROLE_KEYS), source)
        flows[str(flow)] = _role_table(table, key, source)
    return AccessPolicy(True, require_verified, default, roles, flows)


def _role_table(section: Mapping[str, Any], key: str, source: str) -> dict[str, Role]:
    """Read the observer/operator/admin lists of `section` into identity key -> role."""
    table: dict[str, Role] = {}
    where: dict[str, str] = {}
    for role_key in ROLE_KEYS:
        role = Role[role_key.upper()]
        for text in _identities(section.get(role_key), f"{key}.{role_key}", source):
            kind, value = parse_identity(text, f"{key}.{role_key}", source)
            folded = identity_key(kind, value)
            if folded in table and table[folded] != role:
                raise ConfigError(f"{source}: {text} is listed under both {where[folded]} and "
                                  f"{role_key} in {key}; keep it in one list")
            table[folded] = role
            where[folded] = role_key
    return table


def _identities(value: Any, key: str, source: str) -> Iterable[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or any(isinstance(v, (dict, list)) for v in value):
        raise ConfigError(f"{source}: {key} must be a list of identities such as "
                          "[tty:alice, irc-account:alice, xmpp:alice@example.org]")
    return [str(v).strip() for v in value]


def parse_identity(text: str, key: str, source: str) -> tuple[str, str]:
    """Split `kind:value`; ConfigError names the entry and the kinds when it is not one.

    >>> parse_identity("irc-account:alice", "access.admin", "thehat.yml")
    ('irc-account', 'alice')
    """
    kind, sep, value = text.partition(":")
    kind = kind.strip().lower()
    value = value.strip()
    if not sep or kind not in KINDS or not value:
        kinds = "; ".join(f"{k}:<name> for {meaning}" for k, meaning in KIND_MEANINGS.items())
        raise ConfigError(f"{source}: {key} has {text!r}, which is not an identity; write "
                          f"{kinds}")
    if kind == "xmpp" and ("@" not in value or "/" in value):
        raise ConfigError(f"{source}: {key} has {text!r}; an xmpp identity is a bare JID such "
                          "as xmpp:alice@example.org, without a resource")
    return kind, value
