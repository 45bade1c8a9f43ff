"""Values that several frontend configuration sections share: secrets, seconds, mappings."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from thehat.errors import ConfigError
from thehat.names import did_you_mean


# The names of environment variables that a `*_env` key may give.
ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SECRET_KEYS: Final = ("password", "password_env", "password_file")
TOKEN_KEYS: Final = ("token", "token_env", "token_file")


@dataclass(frozen=True)
class Secret:
    """A password or token. Its repr and str hide the value; `reveal` returns it."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"


def seconds_value(value: Any, key: str, source: str, minimum: float = 0.0) -> float:
    """Parse a finite number of seconds of at least `minimum`; ConfigError names `key`."""
    try:
        seconds = float(str(value).strip())
    except ValueError:
        seconds = -1.0
    if not seconds >= minimum or seconds == float("inf"):
        raise ConfigError(f"{source}: {key} is {value!r}; use a number of seconds, "
                          f"{minimum:g} or more")
    return seconds


def mapping_value(value: Any, key: str, accepted: frozenset[str],
                  source: str) -> Mapping[str, Any]:
    """Check that `value` is a mapping whose keys are all in `accepted`; return it."""
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key} must be a mapping with the keys "
                          f"{', '.join(sorted(accepted))}")
    for name in value:
        if name not in accepted:
            raise ConfigError(f"{source}: unknown key {key}.{name}"
                              f"{did_you_mean(str(name), accepted)}; accepted: "
                              f"{', '.join(sorted(accepted))}")
    return value


def text_value(value: Any, key: str, source: str) -> str:
    """Return a scalar setting as stripped text; ConfigError names `key` for a list or mapping."""
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{source}: {key} must be a single value, not a "
                          f"{type(value).__name__}")
    return str(value).strip()


def secret_value(section: Mapping[str, Any], key: str, source: str, base: Path,
                 required: bool,
                 kind: Literal["password", "token"] = "password") -> Secret | None:
    """Read a secret given as `<kind>`, `<kind>_env` (a variable) or `<kind>_file`.

    `kind` is "password" (the keys of SECRET_KEYS) or "token" (TOKEN_KEYS). Returns None when
    none is given and `required` is false; ConfigError names `key` otherwise.
    """
    names = (kind, f"{kind}_env", f"{kind}_file")
    given = [name for name in names if section.get(name) is not None]
    if len(given) > 1:
        raise ConfigError(f"{source}: {key} has {' and '.join(given)}; give the {kind} one "
                          "way only")
    if not given:
        if required:
            raise ConfigError(f"{source}: {key}.{kind} is missing; give {kind}, "
                              f"{kind}_env (an environment variable) or {kind}_file")
        return None
    name = given[0]
    path = f"{key}.{name}"
    value = text_value(section[name], path, source)
    if name == kind:
        secret = value
    elif name == f"{kind}_env":
        if not ENV_NAME.fullmatch(value):
            # Not shown, because it may be the secret itself, written under the wrong key.
            raise ConfigError(f"{source}: {path} is not an environment variable name (letters, "
                              f"digits and _, not starting with a digit); write the variable's "
                              f"name there, or give the {kind} another way")
        if value not in os.environ:
            raise ConfigError(f"{source}: {path} names the environment variable {value!r}, "
                              f"which is not set; set it or give the {kind} another way")
        secret = os.environ[value]
    else:
        file = base / os.path.expanduser(value)
        try:
            secret = file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: {path}: cannot read the {kind} file {file}: "
                              f"{exc}") from exc
    if not secret or any(char in secret for char in "\r\n\x00"):
        raise ConfigError(f"{source}: the {kind} from {path} is empty or contains a line "
                          "break or NUL")
    return Secret(secret)
