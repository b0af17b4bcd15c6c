"""Model names, aliases, versions and references (``name``, ``name:3``, ``name@alias``): what is valid, and why not."""

from __future__ import annotations

import re

from tandem.errors import RegistryError

__all__ = ["REF_FORMS", "check_alias", "check_name", "check_version", "parse_ref"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAME_RULE = "1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
#: The forms of a model reference, as error messages spell them.
REF_FORMS = "NAME, NAME:VERSION or NAME@ALIAS"


def check_name(name: object, what: str = "model name") -> str:
    """Return ``name`` if it is a valid model name, else raise RegistryError saying what is allowed."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RegistryError(f"{what} {name!r} is not valid: expected {_NAME_RULE}")
    return name


def check_alias(alias: object) -> str:
    """Return ``alias`` if it is a valid alias (a valid name, not all digits), else raise RegistryError."""
    checked = check_name(alias, "alias")
    if checked.isdigit():
        raise RegistryError(f"alias {alias!r} is not valid: an alias may not be all digits (that is a version)")
    return checked


def check_version(version: object) -> int:
    """Return ``version`` if it is a positive integer (not a bool), else raise RegistryError."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RegistryError(f"version {version!r} is not valid: expected a positive integer (1, 2, 3...)")
    return version


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """Split a model reference into ``(name, version, alias)``.

    Forms: ``"name"`` (latest version), ``"name:3"`` (a version), ``"name@production"`` (an alias).
    At most one of version and alias is set. A malformed reference raises :class:`RegistryError`.
    """
    if not isinstance(ref, str):
        raise RegistryError(f"model reference {ref!r} is not valid: expected a string {REF_FORMS}")
    bad = f"model reference {ref!r} is not valid: expected {REF_FORMS}"
    if ":" in ref and "@" in ref:
        raise RegistryError(f"{bad}, not both a version and an alias")
    if ":" in ref:
        name, _, raw_version = ref.partition(":")
        if not _NAME_RE.match(name):
            raise RegistryError(f"{bad}, with NAME {_NAME_RULE}")
        if not raw_version.isascii() or not raw_version.isdigit() or int(raw_version) < 1:
            raise RegistryError(f"{bad}, with VERSION a positive integer")
        return name, int(raw_version), None
    if "@" in ref:
        name, _, alias = ref.partition("@")
        if not _NAME_RE.match(name):
            raise RegistryError(f"{bad}, with NAME {_NAME_RULE}")
        if not _NAME_RE.match(alias) or alias.isdigit():
            raise RegistryError(f"{bad}, with ALIAS {_NAME_RULE}, not all digits")
        return name, None, alias
    if not _NAME_RE.match(ref):
        raise RegistryError(f"{bad}, with NAME {_NAME_RULE}")
    return ref, None, None
