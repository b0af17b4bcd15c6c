"""The registry's index in PostgreSQL, for a registry that several machines share.

``$TANDEM_REGISTRY=postgresql://user:password@host:5432/db`` (or ``Registry(home, database=url)``) keeps the
index in PostgreSQL instead of the SQLite file; the bundles stay under the registry home, which the machines
must share (NFS, a mounted bucket). The same statements as SQLite's run here (``?`` placeholders become
psycopg's ``%s``). Every write transaction first takes one transaction-level advisory lock, so registry
writers on every machine take turns as SQLite's ``BEGIN IMMEDIATE`` makes them take turns on one host: a
version number is reserved once, never twice, and never lost. Reads run in REPEATABLE READ, one snapshot.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from tandem.errors import RegistryError
from tandem.registry.database import TABLES, LazySchemaIndex

#: The advisory lock every registry write holds (an arbitrary 64-bit key: "tandem" in ASCII).
LOCK_KEY = 0x74616E64656D
SCHEMA_VERSION = 1
CONNECT_TIMEOUT_S = 10

_SCHEMA = "CREATE TABLE IF NOT EXISTS tandem_schema (version INTEGER NOT NULL);" + TABLES


def is_postgres_url(text: str | None) -> bool:
    """Whether ``text`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return bool(text) and re.match(r"postgres(ql)?://", text) is not None


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class _Statements:
    """A psycopg connection that takes the registry's SQLite-style statements (``?`` placeholders)."""

    def __init__(self, conn: object):
        self._conn = conn

    def execute(self, sql: str, params: tuple = ()) -> object:
        return self._conn.execute(sql.replace("?", "%s"), params)


class PostgresIndex(LazySchemaIndex):
    """Connections to the registry's tables in the PostgreSQL database at ``url``, created on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.db_path = redact(url)  # what messages call it
        self._initialised = False

    def _open(self) -> object:
        try:
            import psycopg
        except ImportError:
            raise RegistryError("a PostgreSQL registry needs psycopg: pip install 'tandem[postgres]'") from None
        try:
            return psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())[:300]
            raise RegistryError(f"registry database {self.db_path} cannot be reached: {reason}") from None

    def _init_schema(self, conn: object) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT max(version) FROM tandem_schema").fetchone()
            if row[0] is None:
                conn.execute("INSERT INTO tandem_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise RegistryError(f"registry database {self.db_path} has schema version {row[0]}: expected "
                                    f"{SCHEMA_VERSION} or older (upgrade tandem)")

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        import psycopg

        return (psycopg.OperationalError,)

    def _failure(self, exc: BaseException) -> RegistryError:
        reason = " ".join(str(exc).split())[:300]
        return RegistryError(f"registry database {self.db_path} cannot be used: {reason}")

    @contextlib.contextmanager
    def write(self) -> Iterator[_Statements]:
        """A transaction holding the registry's advisory lock; commits on success, rolls back on error."""
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            yield _Statements(conn)

    @contextlib.contextmanager
    def read(self) -> Iterator[_Statements]:
        """A read-only REPEATABLE READ transaction, so several queries see one snapshot."""
        with self._connect() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield _Statements(conn)
