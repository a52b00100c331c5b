"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, cast

from sqlalchemy import create_engine, event
from sqlalchemy.engine import CursorResult, Engine, Result, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE run through ``Session.execute`` matched. At run time its
    result is a CursorResult; SQLAlchemy types ``Session.execute`` as returning a Result."""
    return cast(CursorResult[Any], result).rowcount


def make_engine(database_url: str, poolclass: type[Pool] | None = None) -> Engine:
    url = make_url(database_url)
    pooling: dict[str, Any] = {"poolclass": poolclass} if poolclass else {}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # No pre-ping: a connection to a local file cannot go stale, and the ping was a
        # second statement on every checkout (a prediction opens two sessions).
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pooling,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if not pooling:
        pooling = {"pool_size": 10, "max_overflow": 20}
    return create_engine(url, pool_pre_ping=True, **pooling)


class Database:
    """Owns the engine; ``session()`` is a unit of work that commits or rolls back."""

    def __init__(self, database_url: str):
        self.url = database_url
        self.engine = make_engine(database_url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._unit_of_work(take_write_lock=False) as session:
            yield session

    def session_or(self, session: Session | None) -> AbstractContextManager[Session]:
        """The caller's ``session`` when it passes one (its unit of work goes on, and
        commits or rolls back where the caller opened it), else a ``session()`` of its own:
        for a read that a caller may fold into the session it already has."""
        return nullcontext(session) if session is not None else self.session()

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A unit of work that reads, then writes depending on what it read (claims,
        publication, idempotent filing). On SQLite it holds the write lock from the start;
        on PostgreSQL it is an ordinary transaction (callers lock rows they depend on)."""
        with self._unit_of_work(take_write_lock=self.engine.dialect.name == "sqlite") as session:
            yield session

    @contextmanager
    def _unit_of_work(self, take_write_lock: bool) -> Iterator[Session]:
        session = self._factory()
        try:
            if take_write_lock:
                # pysqlite opens transactions lazily, at the first write; taking the write
                # lock first (waiting busy_timeout for it) means a read-then-write cannot
                # fail with SQLITE_BUSY because another writer committed in between.
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
