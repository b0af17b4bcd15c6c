"""What the registry hands out, :class:`ModelRecord`, and where it lives by default, :func:`tandem_home`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.errors import RegistryError

__all__ = ["ModelRecord", "tandem_home"]


@dataclass(frozen=True)
class ModelRecord:
    """One ready version of a model in the registry."""

    name: str
    version: int
    path: Path
    """Absolute path of the bundle directory."""
    created_at: str
    """When the bundle was registered, ISO 8601 in UTC (``2024-05-01T12:00:00.000+00:00``)."""
    aliases: tuple[str, ...]
    """Aliases pointing at this version, sorted."""
    summary: dict = field(default_factory=dict, hash=False)
    """Free JSON given to :meth:`Registry.add` (task, metric, score...)."""

    @property
    def ref(self) -> str:
        """The exact reference of this version, ``name:version``."""
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of this record (path as a string, aliases as a list)."""
        return {
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "created_at": self.created_at,
            "aliases": list(self.aliases),
            "summary": self.summary,
        }


def tandem_home() -> Path:
    """Return tandem's home directory, ``$TANDEM_HOME`` or ``~/.tandem``, creating it if missing."""
    raw = os.environ.get("TANDEM_HOME") or "~/.tandem"
    home = Path(raw).expanduser().absolute()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(f"tandem home {home} cannot be created: {exc.strerror or exc}") from exc
    return home
