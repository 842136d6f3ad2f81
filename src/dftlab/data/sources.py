"""Rows of a data source, each with where it comes from (`file:line`, `file[i]`, `name[i]`).

Local files: JSON lines (`.jsonl`, or `.json` holding one object per line), a JSON array (`.json`), CSV,
Parquet, each optionally compressed (`.gz`, `.zst`), a glob of such files, or a folder written by
`datasets.save_to_disk`. Anything else that is not a local path is a hub dataset. A row that cannot be
read is yielded as the reason it is counted (`malformed_json`, `undecodable`) instead of a dict.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import gzip
import hashlib
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dftlab.data.fingerprint import content_digest
from dftlab.errors import ConfigError
from dftlab.stopping import StopRequested

KINDS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
COMPRESSED = (".gz", ".zst")


def kind(path: Path) -> str | None:
    """`jsonl`, `json`, `csv` or `parquet` from a file's suffixes (a compression suffix is looked through)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return KINDS.get(suffixes[-1]) if suffixes else None


def looks_local(path: str) -> bool:
    """A path the user means as a file (hub dataset names are `owner/name`)."""
    p = path.lower()
    return path.startswith((".", "/", "~")) or any(ch in path for ch in "*?") or \
        any(p.endswith(s) or p.endswith(s + c) for s in KINDS for c in ("", *COMPRESSED))


def local_files(path: str) -> list[Path] | None:
    """The files a local path names (a file, a glob, a dataset folder), None for a hub dataset."""
    p = Path(path).expanduser()
    if any(ch in path for ch in "*?"):
        files = sorted(Path(f) for f in glob.glob(str(p)) if Path(f).is_file())
        if not files:
            raise ConfigError(f"data.task.path={path!r}: no file matches")
        return files
    if p.exists():
        return [p]
    if looks_local(path):
        raise ConfigError(f"data.task.path={path!r}: no such file or directory")
    return None


def _open(path: Path):
    """A binary file object, decompressed for `.gz` and `.zst`."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _maybe_surrogate(raw: bytes) -> bool:
    """Whether JSON text may escape half a surrogate pair (`"\\ud800"`): only then is a row checked."""
    return b"\\ud" in raw.lower()


def _has_lone_surrogate(row) -> bool:
    """A string of `row` holding half a surrogate pair: text no tokenizer takes."""
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _jsonl(path: Path, lines) -> Iterator[tuple[str, object]]:
    for number, raw in enumerate(lines, start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            yield where, "undecodable"
            continue
        except (ValueError, RecursionError):  # not JSON; or a number too long or nesting too deep for Python
            yield where, "malformed_json"
            continue
        if not isinstance(row, dict):
            yield where, "malformed_json"
        else:
            yield where, ("undecodable" if _maybe_surrogate(raw) and _has_lone_surrogate(row) else row)


def _not_rows(path: Path, value) -> ConfigError:
    return ConfigError(f"{path}: a JSON {type(value).__name__}, not an array of rows (or one JSON object per line)")


def _document(path: Path) -> object | None:
    """The one JSON value a `.json` file that is not JSON lines holds (on one line or many); None for
    JSON lines, or for text that is not JSON (its lines are then counted as bad rows)."""
    with _open(path) as f:
        first, second = f.readline(), f.readline()
    try:
        value = json.loads(first.decode("utf-8-sig"))
        return value if not second.strip() else None
    except (ValueError, RecursionError):
        pass
    with _open(path) as f:
        try:
            return json.loads(f.read().decode("utf-8-sig"))
        except (ValueError, RecursionError):
            return None


def _json(path: Path) -> Iterator[tuple[str, object]]:
    with _open(path) as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"["):  # JSON lines under a .json name, as `datasets` reads them
        value = _document(path)
        if value is not None:
            raise ConfigError(f"{path}: a JSON {type(value).__name__}, not an array of rows (or one JSON object "
                              f"per line)")
        with _open(path) as f:
            yield from _jsonl(path, f)
        return
    with _open(path) as f:
        raw = f.read()
    try:
        items = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ConfigError(f"data.task.path={str(path)!r}: not a valid JSON array ({err})") from None
    check = _maybe_surrogate(raw)  # once for the whole file
    for i, row in enumerate(items):
        if not isinstance(row, dict):
            yield f"{path}[{i}]", "malformed_json"
        else:
            yield f"{path}[{i}]", ("undecodable" if check and _has_lone_surrogate(row) else row)


def _csv(path: Path) -> Iterator[tuple[str, object]]:
    with _open(path) as f:
        # undecodable bytes become lone surrogates, so that one bad row does not stop the file
        text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(text)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            values = [v for v in row.values() if isinstance(v, str)]
            if None in row or any(any("\udc80" <= ch <= "\udcff" for ch in v) for v in values):
                yield where, ("undecodable" if None not in row else "malformed_json")
                continue
            yield where, {k: (v if v != "" else None) for k, v in row.items()}


def _parquet(path: Path) -> Iterator[tuple[str, object]]:
    import pyarrow.parquet as pq

    i = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield f"{path}[{i}]", row
            i += 1


def file_rows(path: Path) -> Iterator[tuple[str, object]]:
    k = kind(path)
    if k == "jsonl":
        with _open(path) as f:
            yield from _jsonl(path, f)
    elif k == "json":
        yield from _json(path)
    elif k == "csv":
        yield from _csv(path)
    elif k == "parquet":
        yield from _parquet(path)
    else:
        raise ConfigError(f"data.task.path={str(path)!r}: use a .jsonl, .json, .csv or .parquet file (optionally "
                          f".gz or .zst), a glob of them, a folder written by datasets.save_to_disk, or a hub dataset")


def file_columns(path: Path) -> set[str] | None:
    """The columns a file declares up front (CSV header, Parquet schema); None: read them from the first row."""
    k = kind(path)
    if k == "csv":
        with _open(path) as f:
            text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="replace", newline="")
            return set(next(csv.reader(text), []))
    if k == "parquet":
        import pyarrow.parquet as pq

        return set(pq.ParquetFile(path).schema_arrow.names)
    return None


@dataclass
class Source:
    """What `data.task.path` names, read row by row (`streaming`: hub datasets are not downloaded whole)."""

    path: str
    split: str = "train"
    subset: str | None = None
    revision: str | None = None
    streaming: bool = False
    files: list[Path] | None = field(init=False)

    def __post_init__(self):
        self.files = local_files(self.path)

    @contextlib.contextmanager
    def _readable(self):
        """pyarrow's, datasets' and the hub's errors as one line naming the source."""
        quiet = logging.getLogger("datasets")  # it logs its own copy of the error turned into one line here
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            yield
        except (ConfigError, StopRequested):
            raise
        except Exception as err:
            cause = err.__cause__ or err
            what = "not readable as a dataset" if self.files is not None else "could not be loaded from the hub"
            first = str(cause).splitlines()[0] if str(cause) else ""
            raise ConfigError(f"data.task.path={self.path!r}: {what} ({type(cause).__name__}: {first})") from None
        finally:
            quiet.setLevel(level)

    def _dataset(self):
        import datasets

        with self._readable():
            if self.files is not None:  # a folder written by save_to_disk
                rows = datasets.load_from_disk(str(self.files[0]))
                return rows[self.split] if isinstance(rows, datasets.DatasetDict) else rows
            return datasets.load_dataset(self.path, self.subset, split=self.split, revision=self.revision,
                                         streaming=self.streaming)

    def columns(self) -> set[str] | None:
        if self.files is not None and self.files[0].is_file():
            with self._readable():
                return file_columns(self.files[0])
        names = getattr(self._dataset(), "column_names", None)
        return set(names) if names else None

    def rows(self) -> Iterator[tuple[str, object]]:
        with self._readable():
            if self.files is not None and self.files[0].is_file():
                for path in self.files:
                    yield from file_rows(path)
                return
            for i, row in enumerate(self._dataset()):
                yield f"{self.path}[{i}]", row

    def content_hash(self) -> str | None:
        """The local files' content (`fingerprint.content_digest`); None for a hub dataset: its revision keys it."""
        if self.files is None:
            return None
        if len(self.files) == 1:
            return content_digest(self.files[0])
        return hashlib.sha256("".join(f"\0{p.name}\0{content_digest(p)}" for p in self.files).encode()).hexdigest()
