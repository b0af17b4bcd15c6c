"""Registry of model bundles: names, versions and aliases, kept in SQLite beside the bundles.

Stdlib only (plus :mod:`tandem.errors` and :mod:`tandem.fsutil`), so serving hosts can import it.
"""

from tandem.registry.store import SCHEMA_VERSION, ModelRecord, Registry, check_name, parse_ref, tandem_home

__all__ = ["SCHEMA_VERSION", "ModelRecord", "Registry", "check_name", "parse_ref", "tandem_home"]
