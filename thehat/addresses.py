"""Checks for the e-mail addresses in a flow file's `notifyAtStart` and `notifyAtFinish` lists.

Only a plain address (`local@domain`) is accepted: no display name, no angle brackets, no
quoted local part and no domain literal such as `[192.0.2.1]`. The rules come from the
dot-atom form of addresses in RFC 5322, the length limits of RFC 5321 section 4.5.3.1 and the
host name rules of RFC 1123 (letters, digits and hyphens that do not start or end a label).
Letters of any script are allowed, but sending to a non-ASCII address needs a server that
offers SMTPUTF8.
"""

from __future__ import annotations

import unicodedata
from typing import Final

# RFC 5321 section 4.5.3.1: a path is at most 256 octets, and the two angle brackets around
# the address take two of them. The local part is at most 64 octets and a domain label at
# most 63. These are counted here in characters, which equals octets for ASCII addresses.
MAX_ADDRESS_LENGTH: Final = 254
MAX_LOCAL_LENGTH: Final = 64
MAX_LABEL_LENGTH: Final = 63

# RFC 5322 "specials", which a dot-atom address never contains. The apostrophe is allowed,
# as in o'brien@example.com, because RFC 5322 counts it among the atom characters.
FORBIDDEN_CHARACTERS: Final = frozenset(',<>"()[]:;\\')


def address_problem(address: str) -> str | None:
    r"""Return why `address` is not a usable plain e-mail address, or None when it is.

    >>> address_problem("someone@example.com") is None
    True
    >>> address_problem("ops.team+mop@mail.example.org") is None
    True
    >>> address_problem("root@localhost") is None
    True
    >>> address_problem("bob")
    "'bob' is not an e-mail address: it has no '@'"
    >>> address_problem("a@b@example.com")
    "'a@b@example.com' is not an e-mail address: it has more than one '@'"
    >>> address_problem("@example.com")
    "'@example.com' is not an e-mail address: the local part before '@' is empty"
    >>> address_problem("bob@")
    "'bob@' is not an e-mail address: the domain after '@' is empty"
    >>> address_problem("bob@example")
    "'bob@example' is not an e-mail address: the domain 'example' has no dot; give a full domain such as example.com"
    >>> address_problem("Bob <bob@example.com>")
    "'Bob <bob@example.com>' is not an e-mail address: it contains a space; give only the address, such as someone@example.com"
    >>> address_problem("a@x.org,b@y.org")
    "'a@x.org,b@y.org' is not an e-mail address: it contains ','; give only the address, such as someone@example.com"
    >>> address_problem("bob@-example.com")
    "'bob@-example.com' is not an e-mail address: the domain label '-example' starts or ends with '-'"
    >>> address_problem("bob@example..com")
    "'bob@example..com' is not an e-mail address: the domain 'example..com' has an empty label"
    >>> address_problem("bob\n@example.com")
    "'bob\\n@example.com' is not an e-mail address: it contains the control character U+000A"
    >>> address_problem("")
    'the e-mail address is empty'
    """
    if address == "":
        return "the e-mail address is empty"
    reason = _reason(address)
    if reason is None:
        return None
    return f"{address!r} is not an e-mail address: {reason}"


def _reason(address: str) -> str | None:
    if len(address) > MAX_ADDRESS_LENGTH:
        return f"it is {len(address)} characters long; the maximum is {MAX_ADDRESS_LENGTH}"
    character_reason = _character_reason(address)
    if character_reason is not None:
        return character_reason

    at_signs = address.count("@")
    if at_signs == 0:
        return "it has no '@'"
    if at_signs > 1:
        return "it has more than one '@'"
    local, domain = address.split("@")
    return _local_reason(local) or _domain_reason(domain)


def _character_reason(address: str) -> str | None:
    for char in address:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            return f"it contains the control character U+{ord(char):04X}"
        if char.isspace():
            name = "a space" if char == " " else f"the space character U+{ord(char):04X}"
            return f"it contains {name}; give only the address, such as someone@example.com"
        if char in FORBIDDEN_CHARACTERS:
            return f"it contains {char!r}; give only the address, such as someone@example.com"
    return None


def _local_reason(local: str) -> str | None:
    if local == "":
        return "the local part before '@' is empty"
    if len(local) > MAX_LOCAL_LENGTH:
        return (f"the local part before '@' is {len(local)} characters long; the maximum is "
                f"{MAX_LOCAL_LENGTH}")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "the local part before '@' starts or ends with '.' or has two dots in a row"
    return None


def _domain_reason(domain: str) -> str | None:
    if domain == "":
        return "the domain after '@' is empty"
    if "." not in domain and domain.lower() != "localhost":
        return f"the domain {domain!r} has no dot; give a full domain such as example.com"
    for label in domain.split("."):
        if label == "":
            return f"the domain {domain!r} has an empty label"
        if len(label) > MAX_LABEL_LENGTH:
            return (f"the domain label {label!r} is {len(label)} characters long; the maximum "
                    f"is {MAX_LABEL_LENGTH}")
        if label.startswith("-") or label.endswith("-"):
            return f"the domain label {label!r} starts or ends with '-'"
        for char in label:
            if not (char.isalnum() or char == "-"):
                return (f"the domain {domain!r} contains {char!r}; a domain has only letters, "
                        "digits, '-' and '.'")
    return None
