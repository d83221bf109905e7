"""Data files for ``records_from:`` and the templates' ``load_csv``/``load_json``: CSV, JSON, JSON lines.

``DataFile`` is a ``RecordSource``: every iteration re-opens the file and yields
``(line, record)`` one at a time, so a 100,000-row file never becomes 100,000 objects at once.
A bad row raises ``ChangesetError`` naming the data file and its line.

The formats, by extension:

- ``.csv``: UTF-8 (a BOM is allowed) unless ``records_from: {path: ..., encoding: cp932}`` or
  ``load_csv(path, encoding="cp932")`` names another encoding (``shift_jis``/``sjis`` are read as
  cp932, the Shift_JIS Excel writes); the header row gives the field codes; every value is a
  string; an empty cell omits the field (Kintone's default applies on add, the value is kept on
  update). The columns ``id`` and ``revision`` are whole numbers. A cell of a column whose header
  ends in ``[]`` (``tags[]``) is a list split on ``|``; a column written ``TABLE.FIELD`` is not
  supported (use JSON for subtables).
- ``.json``: one array of objects. The text is read at once but decoded one element at a time.
- ``.jsonl`` / ``.ndjson``: one object per line; blank lines are skipped.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from .errors import ChangesetError, Location
from .records import RECORD_KEYS

FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
LIST_SUFFIX = "[]"
LIST_SEPARATOR = "|"

_WS = re.compile(r"[ \t\n\r]*")
TOO_DEEP = (
    "the JSON is nested too deeply to be a record (arrays or objects inside each other by the thousand)"
)


def data_format(path: Path) -> str | None:
    return FORMATS.get(path.suffix.lower())


# Shift_JIS as Japanese Windows and Excel write it is Microsoft's cp932 (a superset: NEC and IBM
# characters, ～ and － as Windows maps them); strict shift_jis refuses some of what Excel saves.
_ENCODING_ALIASES = {
    "shift_jis": "cp932",
    "sjis": "cp932",
    "shift-jis": "cp932",
    "s_jis": "cp932",
    "windows-31j": "cp932",
}
DEFAULT_ENCODING = "utf-8-sig"  # UTF-8, a BOM allowed


def encoding_name(name: str | None) -> str:
    """A data file's encoding as Python reads it; ValueError naming the problem when unknown."""
    if name is None:
        return DEFAULT_ENCODING
    wanted = _ENCODING_ALIASES.get(name.strip().lower(), name.strip())
    try:
        codec = codecs.lookup(wanted)
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}; e.g. utf-8, cp932 (Shift_JIS), euc_jp") from None
    return "utf-8-sig" if codec.name == "utf-8" else codec.name


def guess_encoding(raw: bytes) -> str | None:
    """What a file that is not UTF-8 looks like: cp932 (Shift_JIS), EUC-JP, or None."""
    for candidate in ("cp932", "euc_jp"):
        try:
            raw.decode(candidate)
        except UnicodeDecodeError:
            continue
        return candidate
    return None


def text_record(header: Sequence[str], row: Sequence[str]) -> dict[str, str]:
    """The record a row of a CSV file of text columns gives: an empty cell omits the field."""
    return {name: cell for name, cell in zip(header, row, strict=False) if cell}


class DataFile:
    """Records of one data file, re-read on every iteration (a ``RecordSource``)."""

    def __init__(
        self,
        path: Path,
        display: str,
        *,
        changeset: str | None = None,
        operation: int | None = None,
        encoding: str = DEFAULT_ENCODING,
    ):
        self.encoding = encoding
        self.path = display  # as the user wrote it / sees it; the RecordSource protocol's `path`
        self.file = path
        self.format = data_format(path) or "csv"
        self.changeset = changeset
        self.operation = operation  # 1-based, for messages
        # Once the header is read: the codes of a CSV file whose columns are all text, so each
        # record maps some of them to text and nothing else (None: not such a file, or not read).
        self.text_columns: frozenset[str] | None = None
        self.text_header: tuple[str, ...] | None = None  # the same codes, in the header's order

    def __repr__(self) -> str:
        return f"DataFile({self.path!r})"

    def error(self, message: str, line: int | None = None, record: int | None = None) -> ChangesetError:
        return ChangesetError(
            message,
            location=Location(
                file=self.path, line=line, changeset=self.changeset, operation=self.operation, record=record
            ),
        )

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return cast(Iterator[tuple[int, dict[str, Any]]], self._read(rows=False))  # no rows: records

    def text_rows(self) -> Iterator[tuple[int, list[str] | dict[str, Any]]]:
        """``__iter__``'s pairs, except that a CSV file of text columns only (``text_header``)
        gives each row as its cells, in the header's order (an empty cell: a field the record
        omits), with no record made: for a reader that keeps rows by column."""
        return self._read(rows=True)

    def _read(self, rows: bool) -> Iterator[tuple[int, list[str] | dict[str, Any]]]:
        try:
            if self.format == "csv":
                yield from self._csv(rows)
            elif self.format == "json":
                yield from self._json()
            else:
                yield from self._jsonl()
        except FileNotFoundError:
            raise self.error("data file not found") from None
        except UnicodeDecodeError:
            raise self._not_utf8() from None
        except RecursionError:
            raise self.error(TOO_DEEP) from None
        except OSError as exc:
            raise self.error(f"cannot read the data file: {exc.strerror or exc}") from None

    def count(self) -> int:
        """How many records the file holds, without building them (CSV rows are only split)."""
        if self.format != "csv":
            return sum(1 for _ in self)
        with open(self.file, newline="", encoding=self.encoding) as handle:
            rows = csv.reader(handle)
            next(rows, None)  # the header
            return sum(1 for row in rows if row and row != [""])

    def _not_utf8(self) -> ChangesetError:
        # The decoder's position is within a buffered chunk: find the line from the bytes.
        raw = self.file.read_bytes()
        try:
            raw.decode(self.encoding)
            line = None
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
        if self.encoding != DEFAULT_ENCODING:
            return self.error(f"not {self.encoding} text: check the file's encoding", line=line)
        guess = guess_encoding(raw)
        looks = {"cp932": "Shift_JIS (cp932, Excel's default in Japan)", "euc_jp": "EUC-JP"}.get(guess or "")
        if looks:
            return self.error(
                f"not UTF-8 text; it looks like {looks}: name it, "
                f'`records_from: {{path: ..., encoding: {guess}}}` (or load_csv(..., encoding="{guess}")), '
                "or save the file as UTF-8",
                line=line,
            )
        return self.error('not UTF-8 text; save the file as UTF-8 (Excel: "CSV UTF-8")', line=line)

    # -- CSV ---------------------------------------------------------------------------------

    def _csv(self, rows: bool = False) -> Iterator[tuple[int, list[str] | dict[str, Any]]]:
        with open(self.file, newline="", encoding=self.encoding) as handle:
            reader = csv.reader(handle, strict=True)
            try:
                header = next(reader, None)
            except csv.Error as exc:
                raise self.error(f"bad CSV: {exc}", line=reader.line_num) from None
            if not header:
                raise self.error("the CSV file is empty; its first row must name the field codes", line=1)
            self.check_nul(header, 1)
            columns = [h.strip() for h in header]
            self._check_header(columns)
            width = len(columns)
            convert = _conversions(columns)
            self.text_header = tuple(columns) if convert is None else None
            self.text_columns = frozenset(columns) if convert is None else None
            cells = rows and convert is None  # the rows as read, no record made
            last_line = reader.line_num
            number = 0
            while True:
                start = last_line + 1
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise self.error(f"bad CSV: {exc}", line=start) from None
                last_line = reader.line_num
                if not row or (len(row) == 1 and row[0] == ""):
                    continue  # a blank line
                number += 1
                if len(row) != width:
                    raise self.error(
                        f"row has {len(row)} cells but the header has {width} ({', '.join(columns)})",
                        line=start,
                        record=number,
                    )
                if "\x00" in "".join(row):  # one test per row; the column is found only when it fails
                    self.check_nul(row, start, columns)
                yield start, row if cells else self._csv_record(columns, convert, row, start, number)

    def _check_header(self, columns: list[str]) -> None:
        if len(columns) == 1:
            for separator, name in ((";", "semicolons"), ("\t", "tabs")):
                if separator in columns[0]:
                    raise self.error(
                        f"the header is one column {columns[0]!r}: kmigrate reads comma-separated CSV, "
                        f"and this file looks separated by {name}; save it with commas",
                        line=1,
                    )
        seen: set[str] = set()
        for position, name in enumerate(columns, 1):
            if not name:
                raise self.error(f"column {position} of the header has no name", line=1)
            if name in seen:
                raise self.error(f"column {name!r} appears twice in the header", line=1)
            seen.add(name)

    def check_nul(self, row: list[str], line: int, columns: list[str] | None = None) -> None:
        """A NUL character is never text a person meant (a binary file, a broken export): refused
        rather than sent to Kintone."""
        for position, cell in enumerate(row, 1):
            if "\x00" in cell:
                name = f" ({columns[position - 1]!r})" if columns and position <= len(columns) else ""
                raise self.error(
                    f"column {position}{name} holds a NUL character; a CSV file is text: "
                    "export it again, or remove the NULs",
                    line=line,
                )

    def _csv_record(
        self, columns: list[str], convert: _Conversions, row: list[str], line: int, number: int
    ) -> dict[str, Any]:
        if convert is None:
            return text_record(columns, row)
        record: dict[str, Any] = {}
        for (name, kind), cell in zip(convert, row, strict=False):
            if cell == "":
                continue
            if kind is _TEXT:
                record[name] = cell
            elif kind is _LIST:
                record[name] = [part for part in cell.split(LIST_SEPARATOR) if part != ""]
            else:  # a record id and revision are numbers
                text = cell.strip()
                if not text.lstrip("-").isdigit():
                    raise self.error(
                        f"column {name!r} must be a whole number, not {cell!r}", line=line, record=number
                    )
                record[name] = int(text)
        return record

    # -- JSON --------------------------------------------------------------------------------

    def _json(self) -> Iterator[tuple[int, dict[str, Any]]]:
        text = self.file.read_text(encoding=self.encoding)
        decoder = json.JSONDecoder(parse_float=str)  # 1.50 stays "1.50": see yamlio
        pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
        line, counted = 1, 0

        def line_at(p: int) -> int:
            nonlocal line, counted
            line += text.count("\n", counted, p)
            counted = p
            return line

        if pos >= len(text) or text[pos] != "[":
            raise self.error(
                "a JSON data file must hold one array of objects: [{...}, {...}]", line=line_at(pos)
            )
        pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
        if pos < len(text) and text[pos] == "]":
            return
        number = 0
        while True:
            try:
                value, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise self.error(f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
            number += 1
            at = line_at(pos)
            if not isinstance(value, dict):
                raise self.error(
                    f"element {number} is {type(value).__name__}, not an object", line=at, record=number
                )
            yield at, value
            pos = _WS.match(text, end).end()  # type: ignore[union-attr]
            if pos < len(text) and text[pos] == ",":
                pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
                continue
            if pos < len(text) and text[pos] == "]":
                rest = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
                if rest != len(text):
                    raise self.error("unexpected text after the closing ]", line=line_at(rest))
                return
            raise self.error(
                "invalid JSON: expected ',' or ']' after an element", line=line_at(min(pos, len(text)))
            )

    def _jsonl(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with open(self.file, encoding=self.encoding) as handle:
            number = 0
            for line, text in enumerate(handle, 1):
                if not text.strip():
                    continue
                number += 1
                try:
                    value = json.loads(text, parse_float=str)
                except json.JSONDecodeError as exc:
                    raise self.error(
                        f"invalid JSON: {exc.msg} (column {exc.colno})", line=line, record=number
                    ) from None
                if not isinstance(value, dict):
                    raise self.error(
                        f"line holds {type(value).__name__}, not an object", line=line, record=number
                    )
                yield line, value


_TEXT, _LIST, _NUMBER = "text", "list", "number"
# Per column, the field it fills and how a cell becomes its value; None: every column is text.
_Conversions = list[tuple[str, str]] | None


def _conversions(columns: list[str]) -> _Conversions:
    """Decided once from the header, not per cell: ``tags[]`` is a list split on ``|`` (field
    ``tags``), ``id`` and ``revision`` are whole numbers, any other column is text."""
    convert = []
    for name in columns:
        if name.endswith(LIST_SUFFIX):
            convert.append((name[: -len(LIST_SUFFIX)], _LIST))
        elif name in RECORD_KEYS:
            convert.append((name, _NUMBER))
        else:
            convert.append((name, _TEXT))
    return None if all(kind is _TEXT for _name, kind in convert) else convert


def read_table(path: Path, display: str, encoding: str = DEFAULT_ENCODING) -> list[dict[str, Any]]:
    """A whole CSV file for templates: every column kept, values as strings (empty cells too)."""
    source = DataFile(path, display, encoding=encoding)
    try:
        with open(path, newline="", encoding=encoding) as handle:
            reader = csv.reader(handle, strict=True)
            raw_header = next(reader, [])
            source.check_nul(raw_header, 1)
            header = [h.strip() for h in raw_header]
            source._check_header(header)
            rows = []
            start = reader.line_num + 1
            for row in reader:
                source.check_nul(row, start, header)
                start = reader.line_num + 1
                if not row:
                    continue
                if len(row) != len(header):
                    raise source.error(
                        f"row has {len(row)} cells but the header has {len(header)}", line=reader.line_num
                    )
                rows.append(dict(zip(header, row, strict=False)))
            return rows
    except FileNotFoundError:
        raise source.error("data file not found") from None
    except csv.Error as exc:
        raise source.error(f"bad CSV: {exc}") from None
    except UnicodeDecodeError:
        raise source._not_utf8() from None
    except OSError as exc:
        raise source.error(f"cannot read the data file: {exc}") from None


def read_json(path: Path, display: str) -> Any:
    """A whole JSON (or JSON-lines) file for templates."""
    source = DataFile(path, display)
    if source.format == "jsonl":
        return [record for _line, record in source]
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise source.error("data file not found") from None
    except json.JSONDecodeError as exc:
        raise source.error(f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
    except RecursionError:
        raise source.error(TOO_DEEP) from None
    except UnicodeDecodeError:
        raise source._not_utf8() from None
    except OSError as exc:
        raise source.error(f"cannot read the data file: {exc}") from None
