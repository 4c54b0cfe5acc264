"""The catalog's CSV format (contract §7, a superset): parsing and writing, no database.

Columns ``Setpoint``, ``Readback`` and optional ``Config``, ``Device``, ``Description``,
``AbsTolerance``, ``RelTolerance``, ``ReadOnly``, ``RestoreStage`` (0, 1, ...: the order a
restore writes in), ``CompletionTimeout`` (seconds; empty: the default); every other column
is a tag group whose cells name tags (comma-separated, quoted when several; empty/nan/none
means none).

Operators open these files in spreadsheets, which run a cell that starts with ``=``, ``+``,
``-``, ``@``, tab or CR as a formula (OWASP "CSV injection": ``=cmd|' /C calc'!A0``). Every CSV
this project writes (catalog and snapshot exports) passes its cells through ``spreadsheet_safe``,
which prefixes such a text cell with ``'`` (the spreadsheet shows it as text), and ``parse``
undoes it with ``spreadsheet_unescape``, so an export round-trips exactly.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

STANDARD_COLUMNS = (
    "Setpoint",
    "Readback",
    "Config",
    "Device",
    "Description",
    "AbsTolerance",
    "RelTolerance",
    "ReadOnly",
    "RestoreStage",
    "CompletionTimeout",
)
_STANDARD_LOWER = {c.lower(): c for c in STANDARD_COLUMNS}
NO_TAGS = {"", "nan", "none"}
TRUE = {"true", "1", "yes", "y", "on", "t"}
FALSE = {"false", "0", "no", "n", "off", "f", ""}
MAX_LENGTH = 255
MAX_STAGE = 32767
MAX_ERRORS = 50
NUL_ERROR = "contains a NUL byte (0x00), which cannot be stored"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FIRST_CHECKED = frozenset((*FORMULA_START, "'"))  # a fast first test: most cells pass it
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _formula_like(text: str) -> bool:
    """Would a spreadsheet read ``text``, once its leading quotes are gone, as a formula? A
    plain number (``-1.5``) is read as that number, not a formula: it stays as it is. Looking
    past leading quotes makes the escape reversible: a text that itself starts with ``'=``
    gets a second quote, which the import removes again."""
    bare = text.lstrip("'")
    return bare[:1] in FORMULA_START and _NUMBER.fullmatch(bare) is None


def spreadsheet_safe(cell: Any) -> Any:
    """A CSV cell a spreadsheet will not run: a text that would start a formula gets a
    leading ``'``; numbers (also negative ones) and every other cell are left as they are."""
    if isinstance(cell, str) and cell[:1] in _FIRST_CHECKED and _formula_like(cell):
        return "'" + cell
    return cell


def spreadsheet_unescape(text: str) -> str:
    """The text ``spreadsheet_safe`` was given, from the cell it made."""
    if text.startswith("'") and _formula_like(text[1:]):
        return text[1:]
    return text


@dataclass
class CsvRow:
    """One data line, normalised: blank cells are None, tags are names per group column."""

    line: int
    setpoint: str | None = None
    readback: str | None = None
    config: str | None = None
    device: str | None = None
    description: str | None = None
    abs_tolerance: float = 0.0
    rel_tolerance: float = 0.0
    read_only: bool = False
    restore_stage: int = 0
    completion_timeout: float | None = None
    tags: dict[str, list[str]] = field(default_factory=dict)

    def value(self, column: str) -> Any:
        """The row's value of a standard column, as stored on the model."""
        return getattr(self, _ATTR[column])


_ATTR = {
    "Setpoint": "setpoint",
    "Readback": "readback",
    "Config": "config",
    "Device": "device",
    "Description": "description",
    "AbsTolerance": "abs_tolerance",
    "RelTolerance": "rel_tolerance",
    "ReadOnly": "read_only",
    "RestoreStage": "restore_stage",
    "CompletionTimeout": "completion_timeout",
}


class CsvError(Exception):
    """The file is not valid; ``errors`` name line and column of each problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def _where(line: int, index: int, name: str) -> str:
    return f"line {line}, column {index + 1} ({name})"


def _header(cells: list[str]) -> tuple[list[str], list[str]]:
    columns = [spreadsheet_unescape(c.strip()) for c in cells]
    errors = []
    seen: dict[str, int] = {}
    for index, name in enumerate(columns):
        if "\x00" in name:
            errors.append(f"line 1, column {index + 1}: {NUL_ERROR}")
            continue
        if not name:
            errors.append(f"line 1, column {index + 1}: empty column name")
            continue
        standard = _STANDARD_LOWER.get(name.lower())
        if standard and standard != name:
            errors.append(
                f"line 1, column {index + 1} ({name}): did you mean '{standard}'? "
                "Column names are case-sensitive"
            )
            continue
        key = name.lower()
        if key in seen:
            errors.append(
                f"line 1, column {index + 1} ({name}): duplicate of column {seen[key] + 1}"
            )
        seen[key] = index
    if "Setpoint" not in columns and "Readback" not in columns:
        errors.append('line 1: header missing required columns "Setpoint" or "Readback"')
    return columns, errors


def _float(text: str, where: str, errors: list[str]) -> float:
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        errors.append(f"{where}: '{text}' is not a number")
        return 0.0
    if not math.isfinite(value) or value < 0:
        errors.append(f"{where}: '{text}' must be a finite number >= 0")
        return 0.0
    return value


def _stage(text: str, where: str, errors: list[str]) -> int:
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_STAGE:
        errors.append(f"{where}: '{text}' must be a whole number from 0 to {MAX_STAGE}")
        return 0
    return value


def _bool(text: str, where: str, errors: list[str]) -> bool:
    lowered = text.lower()
    if lowered in TRUE:
        return True
    if lowered not in FALSE:
        errors.append(f"{where}: '{text}' is not true/false")
    return False


def tag_names(cell: str) -> list[str]:
    """Tag names of a cell: split on commas, trimmed, empty/nan/none dropped, de-duplicated."""
    if cell.strip().lower() in NO_TAGS:
        return []
    names = (n.strip() for n in cell.split(","))
    return list(dict.fromkeys(n for n in names if n.lower() not in NO_TAGS))


def _row(line: int, columns: list[str], cells: list[str], errors: list[str]) -> CsvRow | None:
    row = CsvRow(line=line)
    for index, name in enumerate(columns):
        text = spreadsheet_unescape(cells[index].strip()) if index < len(cells) else ""
        where = _where(line, index, name)
        if "\x00" in text:
            errors.append(f"{where}: {NUL_ERROR}")
            continue
        if name in ("AbsTolerance", "RelTolerance"):
            setattr(row, _ATTR[name], _float(text, where, errors))
        elif name == "ReadOnly":
            row.read_only = _bool(text, where, errors)
        elif name == "RestoreStage":
            row.restore_stage = _stage(text, where, errors)
        elif name == "CompletionTimeout":
            row.completion_timeout = _float(text, where, errors) or None
        elif name in STANDARD_COLUMNS:
            if name != "Description" and len(text) > MAX_LENGTH:
                errors.append(f"{where}: longer than {MAX_LENGTH} characters")
            setattr(row, _ATTR[name], text or None)
        else:
            names = tag_names(text)
            for tag in names:
                if len(tag) > MAX_LENGTH:
                    errors.append(f"{where}: tag name longer than {MAX_LENGTH} characters")
            if names:
                row.tags[name] = names
    if not (row.setpoint or row.readback or row.config):
        return None
    return row


def parse(
    stream: TextIO, *, progress: Callable[[int], None] | None = None
) -> tuple[list[str], list[CsvRow]]:
    """Columns and rows of a catalog CSV; raises CsvError listing every problem found."""
    reader = csv.reader(stream)
    try:
        first = next(reader)
    except StopIteration:
        raise CsvError(["line 1: the file is empty"]) from None
    except csv.Error as exc:
        raise CsvError([f"line 1: {exc}"]) from None
    columns, errors = _header(first)
    if errors:
        raise CsvError(errors)
    rows: list[CsvRow] = []
    seen: dict[tuple[str, str], int] = {}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(f"line {reader.line_num}: {exc}")
            break
        line = reader.line_num
        if progress and line % 5000 == 0:
            progress(line)
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns):
            errors.append(f"line {line}: {len(cells)} cells but the header has {len(columns)}")
            continue
        row = _row(line, columns, cells, errors)
        if row is None:
            continue
        ident = identity(row.setpoint, row.readback, row.config)
        if ident in seen:
            column = {"sp": "Setpoint", "rb": "Readback", "cfg": "Config"}[ident[0]]
            errors.append(
                f"{_where(line, columns.index(column), column)}: '{ident[1]}' "
                f"is already on line {seen[ident]}"
            )
        else:
            seen[ident] = line
        rows.append(row)
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise CsvError(errors[:MAX_ERRORS])
    return columns, rows


def identity(sp: str | None, rb: str | None, cfg: str | None) -> tuple[str, str]:
    """How a row finds its PV: by setpoint, else readback, else config address."""
    if sp:
        return ("sp", sp)
    if rb:
        return ("rb", rb)
    return ("cfg", cfg or "")


def export_header(group_names: Sequence[str]) -> list[str]:
    """The standard columns, then one column per tag group."""
    standard = {c.lower() for c in STANDARD_COLUMNS}
    bad = [g for g in group_names if g.lower() in standard or g != g.strip() or not g]
    if bad:
        raise ValueError(f"tag group names that cannot be CSV columns: {bad}")
    return [*STANDARD_COLUMNS, *group_names]


def _tag_cell(names: Iterable[str]) -> str:
    names = list(names)
    for name in names:
        if "," in name or name.lower() in NO_TAGS or name != name.strip():
            raise ValueError(f"tag name {name!r} cannot be written to a CSV cell")
    return ", ".join(names)


def export_row(values: dict[str, Any], tags: Sequence[Sequence[str]]) -> list[str]:
    """One PV (``.values()`` of the model) as CSV cells in ``export_header`` order."""
    return [
        values["setpoint_address"] or "",
        values["readback_address"] or "",
        values["config_address"] or "",
        values["device"] or "",
        values["description"] or "",
        repr(values["abs_tolerance"]),
        repr(values["rel_tolerance"]),
        "true" if values["read_only"] else "false",
        str(values["restore_stage"]),
        repr(values["completion_timeout"]) if values["completion_timeout"] else "",
        *(_tag_cell(names) for names in tags),
    ]


def csv_writer(stream: TextIO) -> Any:
    """The CSV writer of every export: rows end in CRLF (RFC 4180), which also makes the
    writer quote a cell holding a lone CR; with a bare LF such a cell went out unquoted and
    split its row in two for every reader."""
    return csv.writer(stream, lineterminator="\r\n")


def write(stream: TextIO, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """The catalog as CSV, every cell made ``spreadsheet_safe`` (module docstring)."""
    out = csv_writer(stream)
    out.writerow([spreadsheet_safe(c) for c in header])
    out.writerows([spreadsheet_safe(c) for c in row] for row in rows)
