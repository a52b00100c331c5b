"""Streaming the whole audit log for an auditor, as JSON lines or CSV.

JSON lines carry every field exactly, so an export can be re-verified offline
(``unlearn audit verify --file``). CSV is for reading in a spreadsheet: cells that a
spreadsheet would run as a formula are prefixed with an apostrophe, so it is not the
format to verify hashes from.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Iterator
from typing import Any

from app.audit.chain import canonical_json, timestamp_text
from app.audit.service import RECORD_COLUMNS, AuditFilter, iter_records
from app.db.session import Database

JSONL_TYPE = "application/x-ndjson"
CSV_TYPE = "text/csv; charset=utf-8"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ExportFormat(str, enum.Enum):
    jsonl = "jsonl"
    csv = "csv"


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "created_at": timestamp_text(record["created_at"])}


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = canonical_json(value) if isinstance(value, (dict, list)) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def stream(db: Database, format: ExportFormat, batch_size: int = 500,
           filters: AuditFilter | None = None) -> Iterator[bytes]:
    """Yields the export in chunks; its own session, read in batches, so memory stays flat.
    With ``filters``, only the entries they admit (the console's filtered export)."""
    with db.session() as session:
        if format is ExportFormat.csv:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(RECORD_COLUMNS)
            records = iter_records(session, batch_size, filters=filters)
            for count, record in enumerate(records, 1):
                record = _plain(record)
                writer.writerow([_csv_cell(record[name]) for name in RECORD_COLUMNS])
                if count % batch_size == 0:
                    yield buffer.getvalue().encode("utf-8")
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue().encode("utf-8")
            return
        lines: list[str] = []
        for record in iter_records(session, batch_size, filters=filters):
            lines.append(json.dumps(_plain(record), ensure_ascii=False, allow_nan=False))
            if len(lines) >= batch_size:
                yield ("\n".join(lines) + "\n").encode("utf-8")
                lines = []
        if lines:
            yield ("\n".join(lines) + "\n").encode("utf-8")


def read_jsonl(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip():
            yield json.loads(line)
