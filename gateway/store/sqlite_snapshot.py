"""SQLite persistence of the memory store: load at start, incremental snapshots afterwards.

Blocking by design (stdlib sqlite3); the memory store runs these functions in a worker thread
via `asyncio.to_thread`, one save at a time.

Invariants:
- A file we did not write is never overwritten or reset: anything that is not an empty file,
  an empty SQLite database or a database carrying our magic marker at a schema version we
  can read raises `StoreCorrupt` naming the path. An empty file/database is a fresh start
  (it cannot hold learned state) and gets the schema.
- Every save is one SQLite transaction (rollback journal, synchronous=FULL): a crash or kill
  mid-save leaves the previous snapshot intact, never a half-written one.
- A save rewrites only the keys that changed since the last save, each with its complete
  current content (or deletes it), so replaying a save twice is harmless.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from gateway.store.base import StoreCorrupt, Window

MAGIC = "llm-gateway-state"
SCHEMA_VERSION = 1
_SQLITE_HEADER = b"SQLite format 3\x00"
_TABLES = ("meta", "spend", "records", "counters")
_WINDOWS = frozenset(window.value for window in Window)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE spend (
    scope TEXT NOT NULL, window TEXT NOT NULL, bucket INTEGER NOT NULL, micros INTEGER NOT NULL,
    PRIMARY KEY (scope, window, bucket));
CREATE TABLE records (
    kind TEXT NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL, expires_at REAL,
    PRIMARY KEY (kind, name));
CREATE TABLE counters (
    kind TEXT NOT NULL, name TEXT NOT NULL, field TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (kind, name, field));
"""

SpendRow = tuple[str, str, int, int]  # scope, window, bucket, micros
RecordRow = tuple[str, str, bytes, float | None]  # kind, name, orjson value, expires_at


@dataclass(slots=True)
class Snapshot:
    """Everything a file holds (records already expired at load are left out)."""

    spend: list[SpendRow] = field(default_factory=list)
    records: list[RecordRow] = field(default_factory=list)
    counters: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)


@dataclass(slots=True)
class Changes:
    """The complete current content of every key that changed; None or empty = deleted."""

    spend: dict[str, list[SpendRow]] = field(default_factory=dict)
    records: dict[tuple[str, str], RecordRow | None] = field(default_factory=dict)
    counters: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.spend or self.records or self.counters)


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a save is exactly one
    # transaction and schema creation is inside it too.
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _check_header(path: Path) -> None:
    if path.is_dir():
        raise StoreCorrupt(path, "is a directory, not a state file")
    try:
        with path.open("rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreCorrupt(path, f"cannot be read: {exc}") from exc
    if header and header != _SQLITE_HEADER:
        raise StoreCorrupt(path, "is not an SQLite database (corrupt or foreign file)")


def _check_schema(conn: sqlite3.Connection, path: Path) -> bool:
    """True when the database is empty (fresh); raises unless it is ours and readable."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return True
    if "meta" not in tables:
        raise StoreCorrupt(path, "is an SQLite database without the gateway's schema")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("magic") != MAGIC:
        raise StoreCorrupt(path, "is an SQLite database without the gateway's marker")
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError as exc:
        raise StoreCorrupt(path, "has an unreadable schema version") from exc
    if version > SCHEMA_VERSION:
        raise StoreCorrupt(
            path,
            f"was written by a newer gateway (schema {version}, this one reads "
            f"up to {SCHEMA_VERSION}); upgrade the gateway or move the file away",
        )
    missing = [name for name in _TABLES if name not in tables]
    if missing:
        raise StoreCorrupt(path, f"lacks the table(s) {', '.join(missing)}")
    if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
        raise StoreCorrupt(path, "fails SQLite's integrity check")
    return False


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [("magic", MAGIC), ("schema_version", str(SCHEMA_VERSION))],
    )
    conn.execute("COMMIT")


def _read(conn: sqlite3.Connection, path: Path, now: float) -> Snapshot:
    snapshot = Snapshot()
    for scope, window, bucket, micros in conn.execute(
        "SELECT scope, window, bucket, micros FROM spend"
    ):
        if window not in _WINDOWS:
            raise StoreCorrupt(path, f"holds spend in an unknown window {window!r}")
        snapshot.spend.append((str(scope), str(window), int(bucket), int(micros)))
    for kind, name, value, expires_at in conn.execute(
        "SELECT kind, name, value, expires_at FROM records"
    ):
        if expires_at is not None and expires_at <= now:
            continue
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise StoreCorrupt(path, f"holds an unreadable record {kind}/{name}") from exc
        snapshot.records.append((kind, name, bytes(value), expires_at))
    for kind, name, field_name, value in conn.execute(
        "SELECT kind, name, field, value FROM counters"
    ):
        snapshot.counters.setdefault((kind, name), {})[field_name] = float(value)
    return snapshot


def open_or_create(path: Path, now: float) -> Snapshot:
    """Validate the file at `path` (creating it with our schema if absent or empty) and read it."""
    _check_header(path)
    try:
        conn = _connect(path)
    except sqlite3.Error as exc:
        raise StoreCorrupt(path, f"cannot be opened: {exc}") from exc
    try:
        if _check_schema(conn, path):
            _create_schema(conn)
            return Snapshot()
        return _read(conn, path, now)
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(path, f"cannot be read as a state file: {exc}") from exc
    finally:
        conn.close()


def write(path: Path, changes: Changes, now: float) -> None:
    """Apply `changes` in one transaction and drop records that expired by `now`."""
    conn = _connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _apply(conn, changes, now)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


def _apply(conn: sqlite3.Connection, changes: Changes, now: float) -> None:
    for scope, rows in changes.spend.items():
        conn.execute("DELETE FROM spend WHERE scope = ?", (scope,))
        conn.executemany("INSERT INTO spend VALUES (?, ?, ?, ?)", rows)
    for (kind, name), row in changes.records.items():
        conn.execute("DELETE FROM records WHERE kind = ? AND name = ?", (kind, name))
        if row is not None:
            conn.execute("INSERT INTO records VALUES (?, ?, ?, ?)", row)
    for (kind, name), fields in changes.counters.items():
        conn.execute("DELETE FROM counters WHERE kind = ? AND name = ?", (kind, name))
        conn.executemany(
            "INSERT INTO counters VALUES (?, ?, ?, ?)",
            [(kind, name, key, value) for key, value in fields.items()],
        )
    conn.execute("DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
