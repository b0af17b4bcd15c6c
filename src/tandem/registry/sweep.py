"""What writers killed mid-write (SIGKILL, power loss) leave behind, and how it is told from a live writer's work.

While a version is pending its row's summary records who writes it (``{"pending_writer": "pid@host", ...}``);
hidden temp folders under ``models/<name>/`` record their writer in their name (see :mod:`tandem.fsutil`).
:meth:`tandem.registry.Registry.sweep` removes both once their writer is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

from tandem.fsutil import LEGACY_TEMP_AGE_S, stale_temp, writer_gone, writer_tag

__all__ = ["pending_row_stale", "pending_summary", "remove_bundle_dir", "sweep_temp_entries"]

# The writer lives in the summary so that a sweep can tell a dead writer's row from a live one's without a
# schema change (older tandems sharing the database keep working: they never read pending rows' summaries).
_WRITER_KEY = "pending_writer"


def pending_summary(summary: dict) -> str:
    """The summary text of a pending row: ``summary`` with this process recorded as its writer."""
    return json.dumps({_WRITER_KEY: writer_tag(), "summary": summary}, sort_keys=True)


def pending_row_stale(summary_text: str, created_at: str) -> bool:
    """Whether a pending row's writer is gone: recorded and dead on this host, or unrecorded (an older tandem's
    row) and older than a day."""
    try:
        writer = json.loads(summary_text).get(_WRITER_KEY)
        pid, _, host = writer.partition("@")
        return writer_gone(int(pid), host)
    except (ValueError, AttributeError, TypeError):
        pass
    try:
        age = datetime.now(timezone.utc) - datetime.fromisoformat(created_at)
    except (ValueError, TypeError):
        return False
    return age.total_seconds() > LEGACY_TEMP_AGE_S


def remove_bundle_dir(folder: Path) -> None:
    """Remove a bundle folder: renamed to a hidden trash name first (which a later sweep also removes), so a
    crash never leaves a half-deleted bundle at its real path. A folder already gone is fine."""
    trash = folder.with_name(f".{folder.name}.deleting-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def sweep_temp_entries(models_dir: Path) -> list[str]:
    """Remove the hidden temp folders and files under ``models_dir/<name>/`` whose writer is gone, and deleted
    versions' trash; return their paths. One listing per model name."""
    removed: list[str] = []
    try:
        name_dirs = [d for d in models_dir.iterdir() if d.is_dir() and not d.is_symlink()]
    except FileNotFoundError:
        name_dirs = []
    for name_dir in name_dirs:
        with contextlib.suppress(OSError):
            for entry in name_dir.iterdir():
                if entry.name.startswith(".") and stale_temp(entry):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            entry.unlink()
                    removed.append(str(entry))
    return removed
