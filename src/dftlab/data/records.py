"""Examples read from a source in any format (`formats.py`), with bad rows counted.

A bad row is skipped and counted by reason, and the first file:line of each reason is kept for
the report. Nothing is dropped silently: the counts go into the run's log and summary, and a
source whose bad fraction exceeds the configured limit is refused before training starts.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dftlab.data import formats
from dftlab.data.sources import file_rows
from dftlab.errors import ConfigError

log = logging.getLogger(__name__)
COLUMN_ROWS = 1000  # the rows whose keys are a JSON-lines file's columns

REASONS = ("malformed_json", "undecodable", "missing_field", "not_text", "empty_prompt", "empty_response",
           "empty_text", "bad_message", "unknown_role", "no_assistant_turn")
EXTRA = ("id", "ref_logp")  # carried from a source row to its example as they are


@dataclass
class Records:
    source: str
    rows: list[dict] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    first_bad: dict[str, str] = field(default_factory=dict)  # reason -> "file:line"
    n_good: int = 0  # usable rows seen (when streaming, `rows` does not keep them)
    format: str | None = None  # the format the source was read as

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.first_bad.setdefault(reason, where)

    def check(self, max_bad_fraction: float, key: str) -> None:
        bad = sum(self.skipped.values())
        total = self.n_good + bad
        if bad:
            log.warning("%s: skipped %d of %d rows: %s (first at %s)", self.source, bad, total,
                        dict(self.skipped), self.first_bad)
        if not self.n_good:
            raise ConfigError(f"{self.source}: no usable rows (skipped: {dict(self.skipped) or 'none'})")
        if total and bad / total > max_bad_fraction:
            raise ConfigError(
                f"{self.source}: {bad} of {total} rows are bad ({dict(self.skipped)}; first at {self.first_bad}), "
                f"more than {key}={max_bad_fraction}: fix the data or raise {key}"
            )


def examples(records: Records, rows: Iterable[tuple[str, object]], format: str, columns: dict[str, str],
             available: set[str] | None = None) -> Iterator[dict]:
    """The examples of `rows` ((where, dict or reason) pairs); bad rows are counted in `records`.

    The format is resolved from `available` (the source's columns) or, when the source does not
    declare them (JSON lines), from the keys of its first `COLUMN_ROWS` rows: a first row without a
    column the others have is a `missing_field`, not a file without that column.
    """
    rows = iter(rows)
    if available is None:
        head = list(itertools.islice(rows, COLUMN_ROWS))
        available = set().union(*(row for _, row in head if isinstance(row, dict)))
        rows = itertools.chain(head, rows)
    resolved = None
    for where, row in rows:
        if isinstance(row, str):
            records.skip(row, where)
            continue
        if resolved is None:
            resolved = formats.resolve(format, columns, available or set(row), records.source)
            records.format = resolved[0].name
        try:
            example = formats.normalise(resolved[0], row, resolved[1])
        except formats.Bad as bad:
            records.skip(bad.reason, where)
            continue
        for extra in EXTRA:
            if extra in row:
                example[extra] = row[extra]
        example["where"] = where  # named by errors found later (tokenisation)
        records.n_good += 1
        yield example


def read(source: str, rows: Iterable[tuple[str, object]], format: str = "auto", columns: dict[str, str] | None = None,
         available: set[str] | None = None, max_rows: int | None = None) -> Records:
    """Every example of a source, in memory (at most `max_rows`)."""
    records = Records(source)
    for example in examples(records, rows, format, dict(columns or {}), available):
        records.rows.append(example)
        if max_rows is not None and len(records.rows) >= max_rows:
            break
    return records


def _take(records: Records, row: dict, columns: dict[str, str], where: str) -> None:
    out = {}
    for role, column in columns.items():
        if row.get(column) is None:
            return records.skip("missing_field", where)
        text = row[column]
        if not isinstance(text, str):
            return records.skip("not_text", where)
        if not text.strip():
            return records.skip(f"empty_{role}", where)
        out[role] = text
    for extra in EXTRA:
        if extra in row:
            out[extra] = row[extra]
    out["where"] = where  # for errors found later (a ref_logp of the wrong length)
    records.n_good += 1
    records.rows.append(out)


def read_jsonl(path: Path, columns: dict[str, str], key: str, max_rows: int | None = None) -> Records:
    """Rows of fixed text columns (rejection samples' {prompt, chosen, rejected}) from a JSON-lines file;
    bad lines are counted with their line numbers, a missing column is refused naming `key`."""
    records = Records(str(path))
    checked = False
    for where, row in file_rows(path):
        if max_rows is not None and len(records.rows) >= max_rows:
            break
        if isinstance(row, str):
            records.skip(row, where)
            continue
        if not checked:
            for role, column in columns.items():
                if column not in row:
                    raise ConfigError(f"{key}.{role}={column!r} is not a column of {path}; its columns are: "
                                      f"{', '.join(sorted(row))}")
            checked = True
        _take(records, row, columns, where)
    return records
