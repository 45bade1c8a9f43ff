"""The configuration file: parsed once at start-up into typed, validated objects.

The layout is the original TheHat's, so its files load unchanged: a `wfengine` section for the
engine and web site, and one section per frontend (`thehat-irc`, `thehat-xmpp`). Every key has a
default, so the terminal runs with no file at all. Relative paths are taken relative to the
directory of the configuration file (the current directory when there is no file).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml

from thehat.access import AccessPolicy, parse_access_section
from thehat.errors import ConfigError
from thehat.limits import Limits, parse_limits_section
from thehat.names import did_you_mean

if TYPE_CHECKING:
    from thehat.mail import SmtpSettings
    from thehat.webauth import WebAuth

log = logging.getLogger(__name__)

# Renderer names of the original, mapped to ours; ours are accepted as they are.
RENDERER_ALIASES: Final = {
    "WorkflowDigraph": "digraph",
    "WorkflowDigraphPostscript": "digraph",
    "WorkflowIcal": "ical",
    "WorkflowDumpFile": "text",
    "WorkflowDumpfile": "text",
    "WorkflowRenderer": None,
}
RENDERER_NAMES: Final = ("digraph", "text", "ical")
VCS_CLASSES: Final = ("Git", "Subversion")
TRUE_WORDS: Final = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS: Final = frozenset({"false", "no", "off", "0"})

ENGINE_KEYS: Final = frozenset({
    "datadir", "webdir", "baseurl", "bindaddr", "bindport", "allowExec", "renderers", "vcs",
    "svnroot", "debuglevel", "admins", "timezone", "statusRows", "commandTimeout", "idlePrompt",
})
KNOWN_SECTIONS: Final = frozenset({"wfengine", "thehat-irc", "thehat-xmpp", "smtp", "access",
                                   "limits", "webauth"})


def default_datadir() -> Path:
    """Return `$XDG_DATA_HOME/thehat`, or `~/.local/share/thehat` when it is unset."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "share")
    return Path(base) / "thehat"


@dataclass(frozen=True)
class VcsConfig:
    """The version-control system that keeps the data directory (`class`, `root`)."""

    kind: str
    root: str | None = None


@dataclass(frozen=True)
class EngineConfig:
    """The `wfengine` section."""

    datadir: Path = field(default_factory=default_datadir)
    webdir: Path | None = None
    baseurl: str | None = None
    bindaddr: str = "127.0.0.1"
    # The web site runs only when a port is set; 0 binds any free port.
    bindport: int | None = None
    allow_exec: bool = False
    # None: not configured, so views are rendered only for the web site, and all of them.
    renderers: tuple[str, ...] | None = None
    vcs: VcsConfig | None = None
    admins: tuple[str, ...] = ()
    timezone: str | None = None
    # Rows of the status block that follows a change; 0 shows every step.
    status_rows: int = 25
    # Seconds a step command, program owner or exec may run when the step sets no timeout.
    command_timeout: float = 600.0
    # Minutes without a status block before a run's status is posted again; 0: never.
    idle_minutes: int = 5

    @property
    def web_directory(self) -> Path:
        return self.webdir if self.webdir is not None else self.datadir / "www"

    @property
    def views(self) -> tuple[str, ...]:
        """Return the renderers to run: those configured, else every one."""
        return RENDERER_NAMES if self.renderers is None else self.renderers

    @property
    def renders(self) -> bool:
        """Tell whether views are written to the web directory: for the web site, or
        because `renderers` is configured."""
        return self.bindport is not None or self.renderers is not None


@dataclass(frozen=True)
class Config:
    """The whole configuration: the engine section and the raw frontend sections."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    # Left out of the repr: a raw section may contain an inline password.
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)
    path: Path | None = None
    # The `smtp` section, through which step mail is sent; None: no mail.
    smtp: SmtpSettings | None = None
    # The `limits` section: command rate, line length and flow size.
    limits: Limits = field(default_factory=Limits)
    # The `access` section: roles per identity; unconfigured keeps the earlier behaviour.
    access: AccessPolicy = field(default_factory=AccessPolicy)
    # The `webauth` section: the credentials the web site requires; None: the site is open.
    webauth: WebAuth | None = None


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a configuration file; None gives the defaults.

    Raises ConfigError naming the file, the key path and the accepted values.
    """
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{where}: invalid YAML: {problem}") from exc
    return parse_config(document, path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping, which YAML would
    otherwise settle silently by keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice in one mapping; keep one",
                    key_node.start_mark)
            try:
                seen.add(key)
            except TypeError:
                continue
        return super().construct_mapping(node, deep)


def parse_config(document: Any, path: Path | None = None) -> Config:
    """Validate a loaded YAML document; `path` names the file in errors and anchors paths."""
    source = str(path) if path is not None else "configuration"
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections such as "
                          f"'wfengine:', not {type(document).__name__}")
    for section in document:
        # Sections named thehat-<medium> belong to frontends, which may come from other
        # packages, so only other names are suspect.
        if section not in KNOWN_SECTIONS and not str(section).startswith("thehat-"):
            log.warning("%s: ignoring unknown section %r%s", source, section,
                        did_you_mean(str(section), KNOWN_SECTIONS))
    sections = {}
    for name, value in document.items():
        if name == "wfengine":
            continue
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name} must be a mapping of keys, "
                              f"not {type(value).__name__}")
        sections[str(name)] = value
    base = path.parent if path is not None else Path.cwd()
    engine = _parse_engine(document.get("wfengine"), source, base)
    smtp = None
    if "smtp" in document:
        from thehat.mail import parse_smtp_section

        smtp = parse_smtp_section(document["smtp"], source, base)
    limits = parse_limits_section(document.get("limits"), source)
    access = AccessPolicy()
    if "access" in document:
        access = parse_access_section(document["access"], source)
    webauth = None
    if "webauth" in document:
        from thehat.webauth import parse_webauth_section

        webauth = parse_webauth_section(document["webauth"], source, base)
    return Config(engine=engine, sections=sections, path=path, smtp=smtp, limits=limits,
                  access=access, webauth=webauth)


def _parse_engine(section: Any, source: str, base: Path) -> EngineConfig:
    if section is None:
        return EngineConfig()
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: wfengine must be a mapping of keys, "
                          f"not {type(section).__name__}")
    for key in section:
        if key not in ENGINE_KEYS:
            raise ConfigError(f"{source}: unknown key wfengine.{key}"
                              f"{did_you_mean(str(key), ENGINE_KEYS)}")
    values: dict[str, Any] = {}
    if section.get("datadir") is not None:
        values["datadir"] = _path(section["datadir"], "wfengine.datadir", source, base)
    if section.get("webdir") is not None:
        values["webdir"] = _path(section["webdir"], "wfengine.webdir", source, base)
    if section.get("baseurl") is not None:
        values["baseurl"] = _text(section["baseurl"], "wfengine.baseurl", source)
    if section.get("bindaddr") is not None:
        values["bindaddr"] = _text(section["bindaddr"], "wfengine.bindaddr", source)
    if section.get("bindport") is not None:
        values["bindport"] = _port(section["bindport"], source)
    if section.get("allowExec") is not None:
        values["allow_exec"] = parse_bool(section["allowExec"], "wfengine.allowExec", source)
    if section.get("renderers") is not None:
        values["renderers"] = _renderers(section["renderers"], source)
    if section.get("vcs") is not None:
        values["vcs"] = _vcs(section["vcs"], source)
    if section.get("admins") is not None:
        values["admins"] = tuple(_text_list(section["admins"], "wfengine.admins", source))
    if section.get("statusRows") is not None:
        values["status_rows"] = _count(section["statusRows"], "wfengine.statusRows", source)
    if section.get("timezone") is not None:
        values["timezone"] = _timezone(section["timezone"], source)
    if section.get("commandTimeout") is not None:
        values["command_timeout"] = _timeout(section["commandTimeout"], source)
    if section.get("idlePrompt") is not None:
        values["idle_minutes"] = _count(section["idlePrompt"], "wfengine.idlePrompt", source)
    if "baseurl" in values and values.get("bindport"):
        values["baseurl"] = _with_port(values["baseurl"], values["bindport"])
    return EngineConfig(**values)


def parse_bool(value: Any, key: str, source: str = "configuration") -> bool:
    """Accept a YAML boolean or one of the words true/false, yes/no, on/off, 1/0.

    >>> parse_bool("true", "wfengine.allowExec"), parse_bool(False, "wfengine.allowExec")
    (True, False)
    """
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{source}: {key} is {value!r}; use true or false (also accepted: "
                      "yes/no, on/off, 1/0)")


def _text(value: Any, key: str, source: str) -> str:
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{source}: {key} must be a single value, not a "
                          f"{type(value).__name__}")
    return str(value)


def _text_list(value: Any, key: str, source: str) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or any(isinstance(v, (dict, list)) for v in value):
        raise ConfigError(f"{source}: {key} must be a list of names such as [alice, bob]")
    return [str(v) for v in value]


def _path(value: Any, key: str, source: str, base: Path) -> Path:
    text = os.path.expanduser(_text(value, key, source))
    if not text:
        raise ConfigError(f"{source}: {key} is empty; give a directory path")
    return base / text


def _port(value: Any, source: str) -> int:
    try:
        port = int(str(value).strip())
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"{source}: wfengine.bindport is {value!r}; use a port number "
                          "from 0 to 65535")
    return port


def _count(value: Any, key: str, source: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigError(f"{source}: {key} is {value!r}; use a whole number, 0 or more")
    return number


def _timeout(value: Any, source: str) -> float:
    from thehat.model import MAX_TIMEOUT, parse_timeout

    seconds = parse_timeout(value)
    if seconds is None:
        raise ConfigError(f"{source}: wfengine.commandTimeout is {value!r}; use a number of "
                          f"seconds greater than 0 and at most {MAX_TIMEOUT}")
    return seconds


def _with_port(baseurl: str, port: int) -> str:
    """Append `:port` to a base URL without one, as the original does.

    >>> _with_port("http://localhost", 8808), _with_port("http://h:80/flows", 8808)
    ('http://localhost:8808', 'http://h:80/flows')
    """
    scheme, sep, rest = baseurl.partition("://")
    host = rest.split("/", 1)[0] if sep else baseurl
    if ":" in host or not sep:
        return baseurl
    return f"{scheme}://{host}:{port}{rest[len(host):]}"


def _renderers(value: Any, source: str) -> tuple[str, ...]:
    names = _text_list(value, "wfengine.renderers", source)
    result: list[str] = []
    registered: tuple[str, ...] = ()
    for name in names:
        if name in RENDERER_NAMES:
            mapped: str | None = name
        elif name in RENDERER_ALIASES:
            mapped = RENDERER_ALIASES[name]
        elif name in (registered := registered or _registered_renderers()):
            # A renderer another package registers under the thehat.renderers entry points.
            mapped = name
        else:
            accepted = ", ".join(RENDERER_NAMES + tuple(RENDERER_ALIASES))
            raise ConfigError(f"{source}: wfengine.renderers has unknown renderer {name!r}"
                              f"{did_you_mean(name, list(RENDERER_NAMES) + list(RENDERER_ALIASES))}"
                              f"; accepted: {accepted}")
        if mapped is not None and mapped not in result:
            result.append(mapped)
    return tuple(result)


def _registered_renderers() -> tuple[str, ...]:
    """Return the names of the thehat.renderers entry points, without importing them."""
    from importlib.metadata import entry_points

    return tuple(sorted(e.name for e in entry_points(group="thehat.renderers")))


def _vcs(value: Any, source: str) -> VcsConfig:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: wfengine.vcs must be a mapping with class and root")
    kind = value.get("class")
    if kind not in VCS_CLASSES:
        raise ConfigError(f"{source}: wfengine.vcs.class is {kind!r}; accepted: "
                          + ", ".join(VCS_CLASSES))
    root = value.get("root")
    return VcsConfig(kind=str(kind), root=None if root is None else str(root))


def _timezone(value: Any, source: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = _text(value, "wfengine.timezone", source)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{source}: wfengine.timezone {name!r} is not a known time zone; "
                          "use an IANA name such as Europe/Berlin or UTC") from exc
    return name
