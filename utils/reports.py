"""Plain renderings of run reports for operators: JSON on stdout, and text tables."""

import json
from datetime import datetime

from bson import ObjectId


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ObjectId):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(document):
    """JSON with dates as ISO 8601 text and ObjectIds as their hex string."""
    return json.dumps(document, default=_json_default, indent=2, ensure_ascii=False)


def text_table(headers, rows):
    """Left-aligned columns separated by two spaces, widths fitted to the content."""
    table = [list(map(str, headers))] + [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table)
    return "\n".join(lines)
