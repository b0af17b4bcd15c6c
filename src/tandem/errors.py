"""Errors a user can cause.

Every message names the thing at fault (file, column, row, field) and what was expected.
The CLI prints one line and exits non-zero; the HTTP server answers 4xx with a JSON body.
Anything else that escapes is a bug in tandem.
"""

from __future__ import annotations


class TandemError(Exception):
    """Base class of every error a user can cause."""

    exit_code = 2


class DataError(TandemError):
    """A data file or frame cannot be read or does not fit what is asked of it."""


class SchemaError(DataError):
    """Input rows do not match a model's schema (missing column, wrong type)."""


class TargetError(DataError):
    """The target column is missing or cannot be learned from."""


class BundleError(TandemError):
    """A bundle is missing, malformed, or fails verification."""


class RegistryError(TandemError):
    """A model name, version or alias is not in the registry."""


class ConfigError(TandemError):
    """An option has a value tandem cannot use."""


class FootprintError(TandemError):
    """The footprint meter could not measure (CodeCarbon failed to start or to read the hardware)."""
