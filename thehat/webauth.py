"""The `webauth` section: who may read the status web site.

Without the section the site is open to anyone who can reach its address. With it, every
request must carry one of the configured credentials:

- a token (`token`, `token_env` or `token_file`), sent as `Authorization: Bearer <token>` or
  as `?token=<token>` in the URL. A browser that opens a page with `?token=` is redirected to
  the same address without it and gets a cookie derived from the token;
- a user name and password (`user` plus `password`, `password_env` or `password_file`) for
  HTTP basic authentication.

Both may be configured; then either is enough. This module parses the section and checks
credentials; `thehat.web` applies them to requests. The comparisons take the same time
whether or not the first characters match (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from frontends.config_values import (SECRET_KEYS, TOKEN_KEYS, Secret, mapping_value,
                                     secret_value, text_value)
from thehat.errors import ConfigError

SECTION: Final = "webauth"
KEYS: Final = frozenset({*TOKEN_KEYS, "user", *SECRET_KEYS})
# A token goes into URLs and headers unchanged, so it is limited to characters that need no
# escaping there, and long enough that guessing it is hopeless.
MIN_TOKEN_LENGTH: Final = 16
_TOKEN_CHARACTERS: Final = re.compile(r"[A-Za-z0-9._~+/=-]+")
# The name of the cookie that carries the session value, and the message its HMAC signs.
COOKIE_NAME: Final = "thehat_session"
_COOKIE_MESSAGE: Final = b"thehat web session"
REALM: Final = "thehat"


@dataclass(frozen=True)
class WebAuth:
    """The credentials the web site accepts: a token, a user and password, or both."""

    token: Secret | None = None
    user: str | None = None
    password: Secret | None = None

    @property
    def basic(self) -> bool:
        """Tell whether HTTP basic authentication is configured."""
        return self.user is not None and self.password is not None

    def token_matches(self, candidate: str) -> bool:
        """Tell whether `candidate` is the configured token."""
        if self.token is None:
            return False
        return hmac.compare_digest(candidate.encode("utf-8"),
                                   self.token.reveal().encode("utf-8"))

    def cookie_value(self) -> str:
        """Return the session cookie's value: an HMAC of a fixed message keyed by the token.

        The cookie never contains the token itself, and a new token makes old cookies invalid.
        """
        if self.token is None:
            raise ValueError("a session cookie needs a configured token")
        key = self.token.reveal().encode("utf-8")
        return hmac.new(key, _COOKIE_MESSAGE, hashlib.sha256).hexdigest()

    def cookie_matches(self, candidate: str) -> bool:
        """Tell whether `candidate` is the session cookie's value."""
        if self.token is None:
            return False
        return hmac.compare_digest(candidate.encode("utf-8"), self.cookie_value().encode())

    def authorization_matches(self, header: str) -> bool:
        """Tell whether an `Authorization` header carries the token or the user's password."""
        scheme, _, credentials = header.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            return self.token_matches(credentials)
        if scheme.lower() == "basic" and self.basic:
            return self._basic_matches(credentials)
        return False

    def _basic_matches(self, credentials: str) -> bool:
        assert self.user is not None and self.password is not None
        try:
            decoded = base64.b64decode(credentials.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            return False
        user, separator, password = decoded.partition(b":")
        if not separator:
            return False
        # Both are compared, always, so the time taken does not tell which one was wrong.
        user_ok = hmac.compare_digest(user, self.user.encode("utf-8"))
        password_ok = hmac.compare_digest(password, self.password.reveal().encode("utf-8"))
        return user_ok and password_ok


def parse_webauth_section(section: Any, source: str, base: Path) -> WebAuth:
    """Validate the `webauth` section; ConfigError names the key and what to give instead.

    An empty section is an error: a section that protects nothing is most likely a mistake.
    """
    if section is None:
        section = {}
    mapping = mapping_value(section, SECTION, KEYS, source)
    token = secret_value(mapping, SECTION, source, base, required=False, kind="token")
    if token is not None:
        _check_token(token, source)
    user, password = _basic_credentials(mapping, source, base)
    if token is None and user is None:
        raise ConfigError(f"{source}: {SECTION} gives no credentials; set {SECTION}.token "
                          f"(or token_env, token_file), or {SECTION}.user with a password, "
                          f"or remove the {SECTION} section to leave the site open")
    return WebAuth(token=token, user=user, password=password)


def _check_token(token: Secret, source: str) -> None:
    value = token.reveal()
    if len(value) < MIN_TOKEN_LENGTH or not _TOKEN_CHARACTERS.fullmatch(value):
        # The message never repeats the token.
        raise ConfigError(f"{source}: {SECTION}.token is invalid: use at least "
                          f"{MIN_TOKEN_LENGTH} characters from A-Z, a-z, 0-9 and ._~+/=-, "
                          "for example the output of: python3 -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))'")


def _basic_credentials(mapping: Mapping[str, Any], source: str,
                       base: Path) -> tuple[str | None, Secret | None]:
    has_password = any(mapping.get(key) is not None for key in SECRET_KEYS)
    if mapping.get("user") is None:
        if has_password:
            raise ConfigError(f"{source}: {SECTION} has a password but no user; add "
                              f"{SECTION}.user, the name to enter with the password")
        return None, None
    user = text_value(mapping["user"], f"{SECTION}.user", source)
    if not user or ":" in user or any(not char.isprintable() for char in user):
        raise ConfigError(f"{source}: {SECTION}.user is {user!r}; give a non-empty name "
                          "without ':' or control characters (HTTP basic authentication "
                          "cannot carry them)")
    password = secret_value(mapping, SECTION, source, base, required=True)
    return user, password
