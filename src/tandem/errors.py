"""Errors a user can cause.

Every message names the thing at fault (file, column, row, field) and what was expected.
The CLI prints one line and exits non-zero; the HTTP server answers 4xx with a JSON body.
Anything else that escapes is a bug in tandem.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


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


class MissingExtraError(ConfigError):
    """What a model or a file needs is an optional package that is not installed: the message names the extra."""


#: Where the package to install is not named as the module is imported.
_PACKAGE_OF_MODULE = {"PIL": "Pillow", "yaml": "PyYAML", "sklearn": "scikit-learn"}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it (pyarrow and torch take long to import)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses the name, or a module without a spec
        return False


def need(module: str, extra: str, purpose: str) -> ModuleType:
    """``module`` imported, or a one-line :class:`MissingExtraError`: "``purpose`` needs ``package``: pip install
    'tandem[``extra``]'" (the inference install leaves out what only some models and files need)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".", 1)[0]
        package = _PACKAGE_OF_MODULE.get(top, top)
        raise MissingExtraError(f"{purpose} needs {package}, which is not installed: "
                                f"pip install 'tandem[{extra}]'") from None
