"""Renderings for operators: JSON on stdout (to_json) and text tables (text_table), every value on one line."""

import json
from collections.abc import Sequence
from datetime import datetime

from bson import ObjectId

from utils.one_line import json_one_line, one_line


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ObjectId):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(document: object) -> str:
    """JSON with dates as ISO 8601 text and ObjectIds as their hex string; a line separator, a control
    character or a lone surrogate in a string as its \\u escape (utils/one_line.py)."""
    return json_one_line(json.dumps(document, default=_json_default, indent=2, ensure_ascii=False))


def text_table(headers: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, widths fitted to the content; each cell on one line
    (escaped by one_line, utils/one_line.py)."""
    table = [list(map(one_line, headers))] + [["" if cell is None else one_line(cell) for cell in row]
                                               for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table)
    return "\n".join(lines)
