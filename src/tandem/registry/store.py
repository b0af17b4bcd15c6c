"""SQLite-backed registry of model bundles: names, versions, aliases.

Layout under the registry home (``$TANDEM_HOME`` or ``~/.tandem`` by default)::

    registry.sqlite3              the index (WAL mode; safe for many processes on one host)
    models/<name>/<version>/      one bundle directory per version (contains manifest.json)

The registry does not parse bundles; it only checks that ``manifest.json`` exists. It imports
nothing outside the standard library and :mod:`tandem.errors` / :mod:`tandem.fsutil` (and psycopg, for an
index in PostgreSQL: :mod:`tandem.registry.postgres`), so a serving host can use it without the training
stack.

A writer killed mid-write (SIGKILL, power loss) leaves a ``pending`` row and a hidden temp folder;
:meth:`Registry.add` sweeps both once their writer is gone (see :meth:`Registry.sweep`).

Versions of a name are numbered 1, 2, 3... and are never reused, even after a version (or the
whole name) is deleted: a reference such as ``churn:3`` always meant one bundle.

The parts live beside this module: names and references in :mod:`~tandem.registry.names`, the records and
the home in :mod:`~tandem.registry.records`, the SQLite index in :mod:`~tandem.registry.database`, what dead
writers leave in :mod:`~tandem.registry.sweep`. Their public names are importable from here as before.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from tandem.bundle.files import MANIFEST_FILE
from tandem.errors import RegistryError
from tandem.registry.database import SCHEMA_VERSION, SqliteIndex, now
from tandem.registry.names import REF_FORMS, check_alias, check_name, check_version, parse_ref
from tandem.registry.postgres import PostgresIndex, is_postgres_url
from tandem.registry.records import ModelRecord, tandem_home
from tandem.registry.sweep import pending_row_stale, pending_summary, remove_bundle_dir, sweep_temp_entries

__all__ = ["ModelRecord", "Registry", "parse_ref", "tandem_home", "SCHEMA_VERSION"]


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


class Registry:
    """An index of model bundles kept in SQLite, with the bundles in directories beside it.

    Safe to share between threads and processes on one host: every operation opens its own
    connection, writes run in short ``BEGIN IMMEDIATE`` transactions, and the database is in WAL
    mode with a 30 s busy timeout. Bundles are written outside any transaction.
    """

    def __init__(self, home: Path | str | None = None, *, database: str | None = None) -> None:
        """Open (creating if needed) the registry under ``home`` (default: :func:`tandem_home`).

        The index lives at ``<home>/registry.sqlite3`` and bundles at ``<home>/models/<name>/<version>/``.
        ``database`` (default ``$TANDEM_REGISTRY``), a ``postgresql://`` URL, keeps the index in PostgreSQL
        instead (:mod:`tandem.registry.postgres`), for a registry that several machines share along with
        ``home``.
        """
        if home is None:
            self.home = tandem_home()
        else:
            self.home = Path(home).expanduser().absolute()
            try:
                self.home.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(f"registry home {self.home} cannot be created: {exc.strerror or exc}") from exc
        self.models_dir = self.home / "models"
        database = database if database is not None else os.environ.get("TANDEM_REGISTRY") or None
        if database is not None and not is_postgres_url(database):
            raise RegistryError(f"registry database {database[:80]!r}: expected a postgresql:// URL (or no "
                                "$TANDEM_REGISTRY, for the SQLite file under the registry home)")
        if database is not None:
            self._db = PostgresIndex(database)
            self.db_path = self._db.db_path
        else:
            self.db_path = self.home / "registry.sqlite3"
            self._db = SqliteIndex(self.db_path)

    def __repr__(self) -> str:
        return f"Registry({str(self.home)!r})"

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
        with self._db.write() as conn:
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
                (name, version, now(), pending_summary(summary)),
            )

        final_dir = self._bundle_dir(name, version)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_bundle(final_dir, version)
            if not (final_dir / MANIFEST_FILE).is_file():
                raise RegistryError(
                    f"bundle for {name}:{version} at {final_dir} has no manifest.json: "
                    "expected write_bundle to write a bundle directory there"
                )
        except BaseException:
            shutil.rmtree(final_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                final_dir.parent.rmdir()  # only succeeds when empty
            with self._db.write() as conn:
                conn.execute(
                    "DELETE FROM versions WHERE name = ? AND version = ? AND state = 'pending'", (name, version)
                )
                # Give the number back only if nobody reserved a later one meanwhile.
                conn.execute(
                    "UPDATE names SET last_version = last_version - 1 WHERE name = ? AND last_version = ?",
                    (name, version),
                )
            raise

        with self._db.write() as conn:
            updated = conn.execute(
                "UPDATE versions SET state = 'ready', created_at = ?, summary = ? "
                "WHERE name = ? AND version = ? AND state = 'pending'",
                (now(), summary_text, name, version),
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
        with self._db.read() as conn:
            rows = conn.execute("SELECT name, version, created_at, summary FROM versions WHERE state = 'pending'"
                                ).fetchall()
        stale = [(name, version, summary) for name, version, created_at, summary in rows
                 if pending_row_stale(summary, created_at)]
        if stale:
            with self._db.write() as conn:
                for name, version, summary in stale:
                    gone = conn.execute("DELETE FROM versions WHERE name = ? AND version = ? AND state = 'pending' "
                                        "AND summary = ?", (name, version, summary)).rowcount
                    if gone:
                        removed.append(f"{name}:{version}")
            for ref in removed:
                name, _, version = ref.partition(":")
                remove_bundle_dir(self._bundle_dir(name, int(version)))
        removed.extend(sweep_temp_entries(self.models_dir))
        return removed

    def list(self, name: str | None = None) -> list[ModelRecord]:
        """Ready versions, sorted by name then version; only those of ``name`` when given.

        An unknown ``name`` gives an empty list.
        """
        with self._db.read() as conn:
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
        with self._db.read() as conn:
            return self._pick(self._versions_of(conn, name), name, version, alias)

    def set_alias(self, name: str, version: int, alias: str) -> ModelRecord:
        """Point ``name@alias`` at ``version`` (moving it if it pointed elsewhere); return that version."""
        check_name(name)
        check_version(version)
        check_alias(alias)
        with self._db.write() as conn:
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
        check_alias(alias)
        with self._db.write() as conn:
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
        with self._db.write() as conn:
            records = self._versions_of(conn, name)
            if version is not None:
                records = [self._pick(records, name, version, None)]
            for record in records:
                conn.execute("DELETE FROM aliases WHERE name = ? AND version = ?", (name, record.version))
                conn.execute("DELETE FROM versions WHERE name = ? AND version = ?", (name, record.version))
        for record in records:
            remove_bundle_dir(record.path)
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
            if candidate.is_dir() and (candidate / MANIFEST_FILE).is_file():
                return candidate.absolute()
            if candidate.is_dir():
                raise RegistryError(f"directory {candidate} is not a bundle: expected a manifest.json in it")
            raise RegistryError(
                f"no bundle directory at {text!r}: expected an existing directory with manifest.json, "
                f"or a model reference {REF_FORMS}"
            )
        try:
            return self.get(text).path
        except RegistryError as exc:
            if candidate.is_dir() and (candidate / MANIFEST_FILE).is_file():
                raise RegistryError(f"{exc}; a bundle folder '{text}' exists here: write ./{text} to load the "
                                    "folder (a bare name is a registry reference)") from None
            if candidate.is_dir():
                raise RegistryError(f"directory {candidate} is not a bundle (no manifest.json) and {exc}") from None
            raise
