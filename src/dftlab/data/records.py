"""Reading prompt/response records from files or the Hugging Face hub, with bad rows counted.

A bad row is skipped and counted by reason, and the first file:line of each reason is kept for
the report. Nothing is dropped silently: the counts go into the run's log and summary, and a
source whose bad fraction exceeds the configured limit is refused before training starts.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dftlab.errors import ConfigError, printable

log = logging.getLogger(__name__)

REASONS = ("malformed_json", "undecodable", "missing_field", "not_text", "empty_prompt", "empty_response")


@dataclass
class Records:
    rows: list[dict[str, str]]
    source: str
    skipped: Counter = field(default_factory=Counter)
    first_bad: dict[str, str] = field(default_factory=dict)  # reason -> "file:line"

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.first_bad.setdefault(reason, where)

    def check(self, max_bad_fraction: float, key: str) -> None:
        total = len(self.rows) + sum(self.skipped.values())
        bad = sum(self.skipped.values())
        if not self.rows:
            raise ConfigError(f"{self.source}: no usable rows (skipped: {dict(self.skipped) or 'none'})")
        if total and bad / total > max_bad_fraction:
            raise ConfigError(
                f"{self.source}: {bad} of {total} rows are bad ({dict(self.skipped)}; first at {self.first_bad}), "
                f"more than {key}={max_bad_fraction}: fix the data or raise {key}"
            )
        if bad:
            log.warning("%s: skipped %d of %d rows: %s (first at %s)", self.source, bad, total,
                        dict(self.skipped), self.first_bad)


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _encodable(text: str) -> bool:
    """False for text with a lone surrogate (JSON's "\\ud800"): no tokenizer takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _take(records: Records, row: dict, columns: dict[str, str], where: str) -> None:
    out = {}
    for role, column in columns.items():
        if row.get(column) is None:
            return records.skip("missing_field", where)
        text = _text(row[column])
        if text is None:
            return records.skip("not_text", where)
        if not _encodable(text):
            return records.skip("undecodable", where)
        if not text.strip():
            return records.skip(f"empty_{role}", where)
        out[role] = text
    for extra in ("id", "ref_logp"):
        if extra in row:
            out[extra] = row[extra]
    out["where"] = where  # for errors found later (a ref_logp of the wrong length)
    records.rows.append(out)


def _check_columns(columns: dict[str, str], available: set[str], source: str, key: str) -> None:
    for role, column in columns.items():
        if column not in available:
            raise ConfigError(printable(
                f"{key}.{role}={column!r} is not a column of {source}; its columns are: {', '.join(sorted(available))}"
            ))


COLUMN_ROWS = 1000  # a column absent from every one of the first rows read is not a column of the file


def read_jsonl(path: Path, columns: dict[str, str], key: str, max_rows: int | None = None) -> Records:
    """One JSON object per line (UTF-8, with or without a byte-order mark); bad lines are counted with
    their line numbers. A column is refused as unknown when none of the first `COLUMN_ROWS` objects
    has it (a row without it is a `missing_field`)."""
    records = Records([], str(path))
    seen_columns: set[str] = set()
    objects = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if max_rows is not None and len(records.rows) >= max_rows:
                break
            where = f"{path}:{number}"
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
            except UnicodeDecodeError:
                records.skip("undecodable", where)
                continue
            except (ValueError, RecursionError):  # not JSON; or a number too long or nesting too deep for Python
                records.skip("malformed_json", where)
                continue
            if not isinstance(row, dict):
                records.skip("malformed_json", where)
                continue
            seen_columns |= set(row)
            objects += 1
            if objects == COLUMN_ROWS:
                _check_columns(columns, seen_columns, str(path), key)
            _take(records, row, columns, where)
    if objects:
        _check_columns(columns, seen_columns, str(path), key)
    return records


def read_json(path: Path, columns: dict[str, str], key: str, max_rows: int | None = None) -> Records:
    """A JSON array of row objects (a bad element is counted with its index); a `.json` file of
    JSON lines is read as JSONL."""
    try:
        rows = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err})") from None
    except (ValueError, RecursionError):
        return read_jsonl(path, columns, key, max_rows)
    if not isinstance(rows, list):
        raise ConfigError(f"{path}: a JSON {type(rows).__name__}, not an array of rows (or one JSON object per line)")
    records = Records([], str(path))
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if max_rows is not None and len(records.rows) >= max_rows:
            break
        if not isinstance(row, dict):
            records.skip("malformed_json", f"{path}[{i}]")
            continue
        seen |= set(row)
        _take(records, row, columns, f"{path}[{i}]")
    if seen:
        _check_columns(columns, seen, str(path), key)
    return records


def read_dataset(rows, source: str, columns: dict[str, str], key: str, max_rows: int | None = None) -> Records:
    """Rows of a `datasets.Dataset` (hub or Parquet), with the column names checked up front."""
    available = set(getattr(rows, "column_names", None) or [])
    if available:
        _check_columns(columns, available, source, key)
    records = Records([], source)
    for i, row in enumerate(rows):
        if max_rows is not None and len(records.rows) >= max_rows:
            break
        _take(records, row, columns, f"{source}[{i}]")
    return records
