"""Registry of model bundles: names, versions and aliases, kept in SQLite beside the bundles.

Stdlib only (plus :mod:`tandem.errors`, :mod:`tandem.fsutil` and the bundle's file names), so serving hosts can
import it.

The public interface is what this package exports:

- :class:`Registry`: add, list, get, alias, delete and resolve model bundles (:mod:`~tandem.registry.store`);
- :class:`ModelRecord`: one ready version, and :func:`tandem_home`, the default home
  (:mod:`~tandem.registry.records`);
- :func:`check_name` and :func:`parse_ref`: what a name and a reference may be (:mod:`~tandem.registry.names`);
- :data:`SCHEMA_VERSION`: the version of the SQLite schema (:mod:`~tandem.registry.database`).

The SQLite connections (:mod:`~tandem.registry.database`) and the sweep of what dead writers left
(:mod:`~tandem.registry.sweep`) are internal.
"""

from tandem.registry.database import SCHEMA_VERSION
from tandem.registry.names import check_name, parse_ref
from tandem.registry.records import ModelRecord, tandem_home
from tandem.registry.store import Registry

__all__ = ["SCHEMA_VERSION", "ModelRecord", "Registry", "check_name", "parse_ref", "tandem_home"]
