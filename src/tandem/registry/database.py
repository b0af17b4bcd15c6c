"""The registry's index in SQLite: its schema, and short-lived connections safe across threads and processes.

Every operation opens its own connection; writes run in short ``BEGIN IMMEDIATE`` transactions, and the
database is in WAL mode with a 30 s busy timeout.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from tandem.errors import RegistryError

__all__ = ["SCHEMA_VERSION", "TABLES", "SqliteIndex", "now"]

#: Value of ``PRAGMA user_version`` in a registry database written by this module.
SCHEMA_VERSION = 1

_BUSY_TIMEOUT_S = 30.0

#: The registry's tables: standard SQL that SQLite and PostgreSQL both take (tandem.registry.postgres uses it too).
TABLES = """
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


def now() -> str:
    """The current time as the registry stores it: ISO 8601 in UTC, to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class LazySchemaIndex:
    """What both registry indexes do (SQLite's here, PostgreSQL's in tandem.registry.postgres): a connection per
    operation, the schema created on the first, the driver's own errors turned into one-line RegistryErrors."""

    _initialised = False

    def _open(self) -> object:
        raise NotImplementedError

    def _init_schema(self, conn: object) -> None:
        raise NotImplementedError

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        """The driver's error classes that :meth:`_failure` turns into RegistryErrors."""
        raise NotImplementedError

    def _failure(self, exc: BaseException) -> RegistryError | None:
        """The RegistryError to raise for a driver error, or None to raise it as it is (a bug of tandem's)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _connect(self) -> Iterator:
        conn = self._open()
        try:
            if not self._initialised:
                self._init_schema(conn)
                self._initialised = True
            yield conn
        except self._driver_errors() as exc:
            failure = self._failure(exc)
            if failure is None:
                raise
            raise failure from exc
        finally:
            conn.close()


class SqliteIndex(LazySchemaIndex):
    """Connections to the registry database at ``db_path``, whose schema is created (or checked) on first use."""

    def __init__(self, db_path: Path) -> None:
        """Point at ``db_path``; nothing is opened until the first :meth:`read` or :meth:`write`."""
        self.db_path = db_path
        self._initialised = False

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
        mode = self._use_wal(conn)
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
            for statement in TABLES.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if found < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

    @staticmethod
    def _use_wal(conn: sqlite3.Connection) -> str:
        """Put the database in WAL mode; return the journal mode it is in. SQLite answers a change of journal
        mode with 'database is locked' at once, not after its busy timeout, while another connection holds a lock
        (several first writers of a new registry, say): so that is retried here, for up to the busy timeout."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        pause = 0.002
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_BUSY) != sqlite3.SQLITE_BUSY or \
                        time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(2 * pause, 0.1)

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.DatabaseError,)

    def _failure(self, exc: BaseException) -> RegistryError | None:
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError)):
            return None  # a bug in tandem, not something the user did
        return RegistryError(f"registry database {self.db_path} cannot be used: {exc} "
                             "(expected a writable SQLite file on a local filesystem)")

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
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
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection inside a read transaction, so several queries see one snapshot."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                self._rollback(conn)
