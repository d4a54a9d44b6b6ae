"""Renderings for operators: JSON on stdout (to_json) and text tables (text_table), every value on one line,
every time in one format (timestamp)."""

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from bson import ObjectId

from utils.one_line import json_one_line, one_line


def timestamp(value: datetime) -> str:
    """A time as every output writes it: ISO 8601 to the second with its UTC offset, 2026-11-26T02:15:52+00:00.
    A naive time (as the database gives it) is UTC; an aware one is shown in UTC."""
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return moment.replace(microsecond=0).isoformat()


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, ObjectId):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(document: object) -> str:
    """JSON with dates as timestamp writes them and ObjectIds as their hex string; a line separator, a control
    character or a lone surrogate in a string as its \\u escape (utils/one_line.py)."""
    return json_one_line(json.dumps(document, default=_json_default, indent=2, ensure_ascii=False))


def _text_cell(cell: object) -> str:
    return "" if cell is None else timestamp(cell) if isinstance(cell, datetime) else one_line(cell)


def text_table(headers: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, widths fitted to the content; each cell on one line
    (escaped by one_line, utils/one_line.py), a time as timestamp writes it, None empty."""
    table = [list(map(one_line, headers))] + [list(map(_text_cell, row)) for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table)
    return "\n".join(lines)
