"""Values that several frontend configuration sections share: secrets, seconds, mappings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from thehat.errors import ConfigError
from thehat.names import did_you_mean


@dataclass(frozen=True)
class Secret:
    """A password. Its repr and str hide the value; `reveal` returns it."""

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
