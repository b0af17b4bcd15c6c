"""SQLite-backed registry of model bundles: names, versions, aliases.

Layout under the registry home (``$TANDEM_HOME`` or ``~/.tandem`` by default)::

    registry.sqlite3              the index (WAL mode; safe for many processes on one host)
    models/<name>/<version>/      one bundle directory per version (contains manifest.json)

The registry does not parse bundles; it only checks that ``manifest.json`` exists. It imports
nothing outside the standard library and :mod:`tandem.errors` / :mod:`tandem.fsutil`, so a
serving host can use it without the training stack.

A writer killed mid-write (SIGKILL, power loss) leaves a ``pending`` row and a hidden temp folder;
:meth:`Registry.add` sweeps both once their writer is gone (see :meth:`Registry.sweep`).

Versions of a name are numbered 1, 2, 3... and are never reused, even after a version (or the
whole name) is deleted: a reference such as ``churn:3`` always meant one bundle.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tandem.errors import RegistryError
from tandem.fsutil import LEGACY_TEMP_AGE_S, stale_temp, writer_gone, writer_tag

__all__ = ["ModelRecord", "Registry", "parse_ref", "tandem_home", "SCHEMA_VERSION"]

#: Value of ``PRAGMA user_version`` in a registry database written by this module.
SCHEMA_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAME_RULE = "1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
_REF_FORMS = "NAME, NAME:VERSION or NAME@ALIAS"
_BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'ready')),
    created_at TEXT NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES versions (name, version) ON DELETE CASCADE
);
"""


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


def check_name(name: object, what: str = "model name") -> str:
    """Return ``name`` if it is a valid model name, else raise RegistryError saying what is allowed."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RegistryError(f"{what} {name!r} is not valid: expected {_NAME_RULE}")
    return name


def _check_alias(alias: object) -> str:
    checked = check_name(alias, "alias")
    if checked.isdigit():
        raise RegistryError(f"alias {alias!r} is not valid: an alias may not be all digits (that is a version)")
    return checked


def _check_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RegistryError(f"version {version!r} is not valid: expected a positive integer (1, 2, 3...)")
    return version


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """Split a model reference into ``(name, version, alias)``.

    Forms: ``"name"`` (latest version), ``"name:3"`` (a version), ``"name@production"`` (an alias).
    At most one of version and alias is set. A malformed reference raises :class:`RegistryError`.
    """
    if not isinstance(ref, str):
        raise RegistryError(f"model reference {ref!r} is not valid: expected a string {_REF_FORMS}")
    bad = f"model reference {ref!r} is not valid: expected {_REF_FORMS}"
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# While a version is pending its row's summary records who writes it ({"pending_writer": "pid@host", ...}),
# so that a sweep can tell a dead writer's row from a live one's without a schema change (older tandems
# sharing the database keep working: they never read pending rows' summaries).
_WRITER_KEY = "pending_writer"


def _pending_summary(summary: dict) -> str:
    return json.dumps({_WRITER_KEY: writer_tag(), "summary": summary}, sort_keys=True)


def _pending_row_stale(summary_text: str, created_at: str) -> bool:
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


def _ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 5, 7, 8]`` -> ``"1-3, 5, 7-8"``: short even for many versions."""
    parts: list[str] = []
    start = prev = None
    for n in sorted(numbers):
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = prev = n
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ", ".join(parts)


def _remove_bundle_dir(folder: Path) -> None:
    """Remove a bundle folder: renamed to a hidden trash name first (which a later sweep also removes), so a
    crash never leaves a half-deleted bundle at its real path. A folder already gone is fine."""
    trash = folder.with_name(f".{folder.name}.deleting-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


class Registry:
    """An index of model bundles kept in SQLite, with the bundles in directories beside it.

    Safe to share between threads and processes on one host: every operation opens its own
    connection, writes run in short ``BEGIN IMMEDIATE`` transactions, and the database is in WAL
    mode with a 30 s busy timeout. Bundles are written outside any transaction.
    """

    def __init__(self, home: Path | str | None = None) -> None:
        """Open (creating if needed) the registry under ``home`` (default: :func:`tandem_home`).

        The database lives at ``<home>/registry.sqlite3`` and bundles at
        ``<home>/models/<name>/<version>/``.
        """
        if home is None:
            self.home = tandem_home()
        else:
            self.home = Path(home).expanduser().absolute()
            try:
                self.home.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(f"registry home {self.home} cannot be created: {exc.strerror or exc}") from exc
        self.db_path = self.home / "registry.sqlite3"
        self.models_dir = self.home / "models"
        self._initialised = False

    def __repr__(self) -> str:
        return f"Registry({str(self.home)!r})"

    # ------------------------------------------------------------------ connections

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.db_path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise RegistryError(f"registry database {self.db_path} cannot be opened: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        """Roll back if a transaction is still open (SQLite may already have rolled it back)."""
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # pragma: no cover - filesystems without shared memory
            raise RegistryError(
                f"registry database {self.db_path} cannot use WAL journal mode (got {mode!r}): "
                "expected a local filesystem"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise RegistryError(
                    f"registry database {self.db_path} has schema version {found}: "
                    f"expected {SCHEMA_VERSION} or older (upgrade tandem)"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if found < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = self._open()
        try:
            if not self._initialised:
                self._init_schema(conn)
                self._initialised = True
            yield conn
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError)):
                raise  # a bug in tandem, not something the user did
            raise RegistryError(
                f"registry database {self.db_path} cannot be used: {exc} "
                "(expected a writable SQLite file on a local filesystem)"
            ) from exc
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE``; commits on success, rolls back on error."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                self._rollback(conn)
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection inside a read transaction, so several queries see one snapshot."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                self._rollback(conn)

    # ------------------------------------------------------------------ helpers

    def _bundle_dir(self, name: str, version: int) -> Path:
        return self.models_dir / name / str(version)

    def _records(self, conn: sqlite3.Connection, name: str | None = None) -> list[ModelRecord]:
        """Ready versions (of ``name`` when given) with their aliases, sorted by name then version."""
        where, params = ("AND v.name = ?", (name,)) if name is not None else ("", ())
        rows = conn.execute(
            "SELECT v.name, v.version, v.created_at, v.summary FROM versions v "
            f"WHERE v.state = 'ready' {where} ORDER BY v.name, v.version",
            params,
        ).fetchall()
        alias_rows = conn.execute(
            "SELECT a.name, a.version, a.alias FROM aliases a JOIN versions v "
            "ON a.name = v.name AND a.version = v.version "
            f"WHERE v.state = 'ready' {where} ORDER BY a.alias",
            params,
        ).fetchall()
        by_version: dict[tuple[str, int], list[str]] = {}
        for alias_name, version, alias in alias_rows:
            by_version.setdefault((alias_name, version), []).append(alias)
        return [
            ModelRecord(
                name=row_name,
                version=version,
                path=self._bundle_dir(row_name, version),
                created_at=created_at,
                aliases=tuple(by_version.get((row_name, version), ())),
                summary=json.loads(summary),
            )
            for row_name, version, created_at, summary in rows
        ]

    def _versions_of(self, conn: sqlite3.Connection, name: str) -> list[ModelRecord]:
        """Ready versions of ``name``; an unknown name raises with the closest known names."""
        records = self._records(conn, name)
        if records:
            return records
        known = [
            row[0] for row in conn.execute("SELECT DISTINCT name FROM versions WHERE state = 'ready' ORDER BY name")
        ]
        if not known:
            hint = f"the registry at {self.home} is empty"
        else:
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
            if close:
                hint = "did you mean " + ", ".join(repr(c) for c in close) + "?"
            else:
                closest = difflib.get_close_matches(name, known, n=5, cutoff=0.0)
                hint = "known names include " + ", ".join(repr(c) for c in closest)
        raise RegistryError(f"no model named {name!r} in the registry: {hint}")

    @staticmethod
    def _pick(records: list[ModelRecord], name: str, version: int | None, alias: str | None) -> ModelRecord:
        if version is not None:
            for record in records:
                if record.version == version:
                    return record
            raise RegistryError(
                f"model {name!r} has no version {version}: expected one of {_ranges([r.version for r in records])}"
            )
        if alias is not None:
            for record in records:
                if alias in record.aliases:
                    return record
            existing = [f"{a} -> {r.version}" for r in records for a in r.aliases]
            if existing:
                hint = "expected one of " + ", ".join(sorted(existing))
            else:
                hint = f"{name!r} has no aliases yet (set one with set_alias)"
            raise RegistryError(f"model {name!r} has no alias {alias!r}: {hint}")
        return records[-1]

    # ------------------------------------------------------------------ public API

    def add(
        self,
        name: str,
        write_bundle: Callable[[Path, int], None],
        summary: dict | None = None,
    ) -> ModelRecord:
        """Register a new version of ``name`` and return its record.

        The next version number is reserved in a short transaction (a ``pending`` row, invisible
        to :meth:`list` and :meth:`get`); then ``write_bundle(final_dir, version)`` is called
        outside any transaction and must write the bundle atomically into ``final_dir`` (which does
        not exist yet), e.g. with :func:`tandem.fsutil.atomic_dir`, including ``manifest.json``.
        The row is then marked ready. If ``write_bundle`` raises (or writes no ``manifest.json``),
        the pending row and any partial directory are removed and the error propagates. What writers killed
        before they could clean up left behind is swept first (:meth:`sweep`).
        """
        check_name(name)
        if summary is None:
            summary = {}
        if not isinstance(summary, dict):
            raise RegistryError(
                f"summary for model {name!r} is a {type(summary).__name__}: expected a dict of JSON values"
            )
        try:
            summary_text = json.dumps(summary, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"summary for model {name!r} is not valid JSON: {exc}") from exc

        self.sweep()
        with self._write() as conn:
            row = conn.execute("SELECT last_version FROM names WHERE name = ?", (name,)).fetchone()
            version = (row[0] if row else 0) + 1
            # Skip any directory left behind (an orphan from a crash, or a case-insensitive
            # filesystem where another name maps to the same folder): bundles are never overwritten.
            while self._bundle_dir(name, version).exists():
                version += 1
            conn.execute(
                "INSERT INTO names (name, last_version) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET last_version = excluded.last_version",
                (name, version),
            )
            conn.execute(
                "INSERT INTO versions (name, version, state, created_at, summary) VALUES (?, ?, 'pending', ?, ?)",
                (name, version, _now(), _pending_summary(summary)),
            )

        final_dir = self._bundle_dir(name, version)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_bundle(final_dir, version)
            if not (final_dir / "manifest.json").is_file():
                raise RegistryError(
                    f"bundle for {name}:{version} at {final_dir} has no manifest.json: "
                    "expected write_bundle to write a bundle directory there"
                )
        except BaseException:
            shutil.rmtree(final_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                final_dir.parent.rmdir()  # only succeeds when empty
            with self._write() as conn:
                conn.execute(
                    "DELETE FROM versions WHERE name = ? AND version = ? AND state = 'pending'", (name, version)
                )
                # Give the number back only if nobody reserved a later one meanwhile.
                conn.execute(
                    "UPDATE names SET last_version = last_version - 1 WHERE name = ? AND last_version = ?",
                    (name, version),
                )
            raise

        with self._write() as conn:
            updated = conn.execute(
                "UPDATE versions SET state = 'ready', created_at = ?, summary = ? "
                "WHERE name = ? AND version = ? AND state = 'pending'",
                (_now(), summary_text, name, version),
            ).rowcount
            if updated != 1:  # pragma: no cover - nothing else touches pending rows
                raise RuntimeError(f"pending registry row for {name}:{version} vanished while writing its bundle")
            return self._pick(self._records(conn, name), name, version, None)

    def sweep(self) -> list[str]:
        """Remove what writers that died mid-write left behind; return what was removed (refs and paths).

        A ``pending`` row goes (with its bundle folder, if the writer died after the rename) when its writer
        is gone: it ran on this host and its pid is no longer alive; rows of older tandems, which record no
        writer, when over a day old. A hidden temp folder or file under ``models/<name>/`` goes on the same
        rule (its name records its writer, see :mod:`tandem.fsutil`), and so does a deleted version's trash.
        Nothing a live writer on this host uses is touched; writers on other hosts are never judged gone.
        Called by :meth:`add`: one read of the pending rows and one listing per model name.
        """
        removed: list[str] = []
        with self._read() as conn:
            rows = conn.execute("SELECT name, version, created_at, summary FROM versions WHERE state = 'pending'"
                                ).fetchall()
        stale = [(name, version, summary) for name, version, created_at, summary in rows
                 if _pending_row_stale(summary, created_at)]
        if stale:
            with self._write() as conn:
                for name, version, summary in stale:
                    gone = conn.execute("DELETE FROM versions WHERE name = ? AND version = ? AND state = 'pending' "
                                        "AND summary = ?", (name, version, summary)).rowcount
                    if gone:
                        removed.append(f"{name}:{version}")
            for ref in removed:
                name, _, version = ref.partition(":")
                _remove_bundle_dir(self._bundle_dir(name, int(version)))
        try:
            name_dirs = [d for d in self.models_dir.iterdir() if d.is_dir() and not d.is_symlink()]
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

    def list(self, name: str | None = None) -> list[ModelRecord]:
        """Ready versions, sorted by name then version; only those of ``name`` when given.

        An unknown ``name`` gives an empty list.
        """
        with self._read() as conn:
            if name is None:
                return self._records(conn)
            check_name(name)
            return self._records(conn, name)

    def get(self, ref: str) -> ModelRecord:
        """Look up a reference: ``"name"`` (latest version), ``"name:3"`` or ``"name@production"``.

        Raises :class:`RegistryError` naming the closest known names for an unknown name, and the
        versions or aliases that exist for an unknown version or alias.
        """
        name, version, alias = parse_ref(ref)
        with self._read() as conn:
            return self._pick(self._versions_of(conn, name), name, version, alias)

    def set_alias(self, name: str, version: int, alias: str) -> ModelRecord:
        """Point ``name@alias`` at ``version`` (moving it if it pointed elsewhere); return that version."""
        check_name(name)
        _check_version(version)
        _check_alias(alias)
        with self._write() as conn:
            self._pick(self._versions_of(conn, name), name, version, None)
            conn.execute(
                "INSERT INTO aliases (name, alias, version) VALUES (?, ?, ?) "
                "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
                (name, alias, version),
            )
            return self._pick(self._records(conn, name), name, version, None)

    def remove_alias(self, name: str, alias: str) -> None:
        """Remove ``name@alias``; raises :class:`RegistryError` if it does not exist."""
        check_name(name)
        _check_alias(alias)
        with self._write() as conn:
            self._pick(self._versions_of(conn, name), name, None, alias)
            conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))

    def delete(self, ref: str) -> list[ModelRecord]:
        """Delete ``"name:3"`` (one version) or ``"name"`` (every version); return what was deleted.

        Rows and aliases go in one transaction; then each bundle directory is renamed to a hidden
        temporary name and removed, so a crash never leaves a half-deleted bundle at its real path.
        Version numbers are not reused afterwards. An alias reference is refused: delete by version.
        """
        name, version, alias = parse_ref(ref)
        if alias is not None:
            raise RegistryError(
                f"cannot delete {ref!r}: expected NAME or NAME:VERSION (look the version up with get, "
                "then delete it by number)"
            )
        with self._write() as conn:
            records = self._versions_of(conn, name)
            if version is not None:
                records = [self._pick(records, name, version, None)]
            for record in records:
                conn.execute("DELETE FROM aliases WHERE name = ? AND version = ?", (name, record.version))
                conn.execute("DELETE FROM versions WHERE name = ? AND version = ?", (name, record.version))
        for record in records:
            _remove_bundle_dir(record.path)
        with contextlib.suppress(OSError):
            (self.models_dir / name).rmdir()  # only succeeds when empty
        return records

    def resolve(self, name_or_path: str | Path) -> Path:
        """Return the bundle directory that ``name_or_path`` means.

        The rule does not depend on the working directory's contents: a :class:`~pathlib.Path`, or a string
        in path form (with a ``/``, or starting with ``.`` or ``~``: ``./churn``, ``/abs/churn``, ``~/churn``)
        is a bundle folder; any other string is a registry reference (``name``, ``name:3``, ``name@alias``,
        see :meth:`get`), even when a folder of that name exists here. When such a reference is not in the
        registry but a bundle folder of that name is, the error says to write ``./name`` to load the folder.
        """
        text = str(name_or_path)
        candidate = Path(text).expanduser()
        looks_like_path = (isinstance(name_or_path, os.PathLike) or candidate.is_absolute()
                           or any(sep and sep in text for sep in (os.sep, os.altsep)) or text.startswith((".", "~")))
        if looks_like_path:
            if candidate.is_dir() and (candidate / "manifest.json").is_file():
                return candidate.absolute()
            if candidate.is_dir():
                raise RegistryError(f"directory {candidate} is not a bundle: expected a manifest.json in it")
            raise RegistryError(
                f"no bundle directory at {text!r}: expected an existing directory with manifest.json, "
                f"or a model reference {_REF_FORMS}"
            )
        try:
            return self.get(text).path
        except RegistryError as exc:
            if candidate.is_dir() and (candidate / "manifest.json").is_file():
                raise RegistryError(f"{exc}; a bundle folder '{text}' exists here: write ./{text} to load the "
                                    "folder (a bare name is a registry reference)") from None
            if candidate.is_dir():
                raise RegistryError(f"directory {candidate} is not a bundle (no manifest.json) and {exc}") from None
            raise
