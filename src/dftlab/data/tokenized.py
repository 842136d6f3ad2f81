"""Tokenised splits: built once with `datasets.map` (`num_proc` worker processes), kept on disk as Arrow
(memory-mapped, so the data may be larger than memory) and cached by a key of the data's content (the
task's `fingerprint`), the tokenizer's (`fingerprint.tokenizer_digest`) and the settings.

A build writes into a temporary folder beside the cache entry and renames it into place (atomic on one
file system): two processes building the same entry at once never leave a half-written one, the
second to finish keeps the first's. Without a cache folder the splits stay in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets

from dftlab.data.chat import SpanError
from dftlab.data.encode import TOKEN_FIELDS, Encoded, EncodeSettings, NeedsTemplate, encode_example
from dftlab.data.fingerprint import tokenizer_digest
from dftlab.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "val")


def cache_key(task_fingerprint: str, tokenizer, settings: EncodeSettings, truncation: str) -> str:
    spec = [task_fingerprint, tokenizer_digest(tokenizer), settings.max_length, settings.chat_template,
            settings.train_on, truncation, 2]  # 2: the layout of an entry
    return hashlib.sha256(repr(spec).encode()).hexdigest()[:16]


class EncodedRows(Sequence):
    """A tokenised split as a sequence of `Encoded`, read from Arrow on access."""

    def __init__(self, table: datasets.Dataset):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> Encoded:
        row = self.table[int(i)]
        fields = {name: row[name] for name in TOKEN_FIELDS if row.get(name) is not None}
        return Encoded(row["input_ids"], row["prompt_len"], row["truncated"], [tuple(s) for s in row["spans"]], fields)

    def n_targets(self) -> list[int]:
        return list(self.table["n_targets"])


def _features() -> datasets.Features:
    """The columns `_encode_batch` writes, declared: a first batch whose rows are all cut away (empty lists,
    no per-token values) would otherwise fix their types as null."""
    v = datasets.Value
    ints = datasets.Sequence(v("int64"))
    return datasets.Features({
        "input_ids": ints, "prompt_len": v("int64"), "truncated": v("bool"), "spans": datasets.Sequence(ints),
        "n_targets": v("int64"), "n_tokens": v("int64"), "n_unk": v("int64"), "status": v("string"),
        "where": v("string"), **{name: datasets.Sequence(v("float64")) for name in TOKEN_FIELDS},
        **{f"given_{name}": v("bool") for name in TOKEN_FIELDS},
    })


def _encode_batch(batch: dict, tokenizer, settings: EncodeSettings) -> dict:
    out = {k: [] for k in ("input_ids", "prompt_len", "truncated", "spans", "n_targets", "n_tokens", "n_unk",
                           "status", "where", *TOKEN_FIELDS, *(f"given_{name}" for name in TOKEN_FIELDS))}
    unk = tokenizer.unk_token_id
    for raw in batch["row"]:
        example = json.loads(raw)
        status = "ok"
        try:
            e = encode_example(tokenizer, example, settings)
        except NeedsTemplate as err:
            e, status = None, f"needs_template\t{example.get('where', '?')}\t{err}"
        except SpanError as err:
            e, status = None, f"span\t{example.get('where', '?')}\t{err}"
        except ValueError as err:  # per-token values that do not fit the targets
            e, status = None, f"bad\t{example.get('where', '?')}\t{err}"
        if e is None and status == "ok":
            status = "truncated_away"
        ids = e.input_ids if e is not None else []
        out["input_ids"].append(ids)
        out["prompt_len"].append(e.prompt_len if e is not None else 0)
        out["truncated"].append(bool(e is not None and e.truncated))
        out["spans"].append([list(s) for s in e.target_spans()] if e is not None else [])
        out["n_targets"].append(e.n_targets if e is not None else 0)
        out["n_tokens"].append(len(ids))
        out["n_unk"].append(sum(t == unk for t in ids) if unk is not None else 0)
        out["status"].append(status)
        out["where"].append(str(example.get("where", "")))
        for name in TOKEN_FIELDS:
            out[name].append(e.fields.get(name) if e is not None else None)
            out[f"given_{name}"].append(example.get(name) is not None)
    return out


def _raw_table(rows: Iterable[dict], folder: Path | None) -> datasets.Dataset:
    """Examples as one JSON string each (conversations have no fixed schema), on disk when `folder` is given."""
    if folder is None:
        return datasets.Dataset.from_dict({"row": [json.dumps(r) for r in rows]})
    import pyarrow as pa

    schema = pa.schema([("row", pa.string())])
    path = folder / "raw.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        chunk = []
        for r in rows:
            chunk.append(json.dumps(r))
            if len(chunk) == 4096:
                writer.write_batch(pa.record_batch([pa.array(chunk, pa.string())], schema=schema))
                chunk = []
        writer.write_batch(pa.record_batch([pa.array(chunk, pa.string())], schema=schema))
    return datasets.Dataset.from_file(str(path))


def _tokenise(name: str, rows, tokenizer, settings: EncodeSettings, num_proc: int | None,
              folder: Path | None) -> datasets.Dataset:
    raw = _raw_table(rows, folder)
    if len(raw) == 0:
        raise ConfigError(f"the {name} split has no rows")
    kwargs = {"keep_in_memory": True} if folder is None else {"cache_file_name": str(folder / f"{name}.arrow")}
    procs = num_proc if num_proc and num_proc > 1 and len(raw) >= 2 * num_proc else None
    return raw.map(_encode_batch, batched=True, batch_size=256, num_proc=procs, remove_columns=["row"],
                   features=_features(), fn_kwargs={"tokenizer": tokenizer, "settings": settings},
                   desc=f"tokenising {name}", **kwargs)


def _check(name: str, table: datasets.Dataset) -> Counter:
    """Counts of rows cut by max_length; a row the template cannot render stops the run, naming it."""
    counts = Counter()
    for status in table["status"]:  # in order: the first bad row is named
        if status.startswith(("needs_template", "span", "bad")):
            kind, where, detail = status.split("\t", 2)
            if kind == "needs_template":
                raise ConfigError(f"{where}: {detail}, and data.task.chat_template=false; conversations are "
                                  f"rendered by the tokenizer's chat template (set data.task.chat_template=true)")
            raise ConfigError(f"{where}: {detail}")
    for field in TOKEN_FIELDS:
        given = table[f"given_{field}"]
        if any(given) and not all(given):
            where = table[given.index(False)]["where"] or f"{name} row {given.index(False)}"
            raise ConfigError(f"{where}: no {field} field, while other rows have one: give it to every row or none")
    statuses = Counter(table["status"])
    if statuses["truncated_away"]:
        counts["truncated_away"] = statuses["truncated_away"]
    if partly := sum(table["truncated"]):
        counts["truncated_partly"] = partly
    return counts


def _kept(name: str, table: datasets.Dataset, counts: dict, truncation: str, max_length: int,
          in_memory: bool) -> datasets.Dataset:
    """The rows trained on (`truncation=drop`: without those cut partly), without the build's columns."""
    keep = [i for i, (s, t) in enumerate(zip(table["status"], table["truncated"], strict=True))
            if s == "ok" and not (truncation == "drop" and t)]
    if not keep:
        raise ConfigError(f"the {name} split is empty after tokenisation ({counts}): "
                          f"raise data.max_length={max_length}")
    if counts:
        log.warning("%s split: %s (max_length=%d, truncation=%s)", name, counts, max_length, truncation)
    if len(keep) < len(table):
        table = table.select(keep, keep_in_memory=in_memory)
    return table.remove_columns(["status", "where", "n_tokens", "n_unk", *(f"given_{f}" for f in TOKEN_FIELDS)])


def encode_split(name: str, rows, tokenizer, settings: EncodeSettings, truncation: str = "keep",
                 num_proc: int | None = None) -> tuple[EncodedRows, dict]:
    """One split's rows tokenised in memory, uncached (rows a task gives beside `build`'s, e.g. the
    validation rows of preference pairs), and what was cut."""
    table = _tokenise(name, rows, tokenizer, settings, num_proc, None)
    counts = dict(_check(name, table))
    return EncodedRows(_kept(name, table, counts, truncation, settings.max_length, True)), counts


def check_unknown(tables: dict[str, datasets.Dataset], tokenizer, max_unk_fraction: float, model: str) -> float:
    """The fraction of the data's tokens that the tokenizer encodes as unknown; too many refuse the run."""
    tokens = sum(sum(t["n_tokens"]) for t in tables.values())
    unknown = sum(sum(t["n_unk"]) for t in tables.values())
    fraction = unknown / max(tokens, 1)
    if fraction > max_unk_fraction:
        raise ConfigError(
            f"the tokenizer of model.name_or_path={model} encodes {fraction:.1%} of the data's tokens as "
            f"{tokenizer.unk_token!r} (more than data.task.max_unk_fraction={max_unk_fraction}): it cannot encode "
            f"this data; choose a model whose tokenizer covers it"
        )
    return fraction


def check_cut(skipped: dict, kept: int, truncation: str, max_length: int, task) -> None:
    """Rows cut away by `max_length` (with `truncation=drop`, rows cut at all) count toward the task's
    bad-row limit (`max_bad_fraction`, 1% for a task without one), with its bad source rows: a short
    `max_length` does not train on a fraction of the data silently."""
    limit = getattr(task, "max_bad_fraction", 0.01)
    splits = [counts for name, counts in skipped.items() if name in SPLITS]
    cut = sum(c.get("truncated_away", 0) + (c.get("truncated_partly", 0) if truncation == "drop" else 0)
              for c in splits)
    source = sum(skipped.get("source", {}).values())
    total = kept + cut + source
    if cut and (cut + source) / total > limit:
        key = f" or data.task.max_bad_fraction={limit}" if hasattr(task, "max_bad_fraction") else ""
        how = "cut away or cut" if truncation == "drop" else "cut away"
        more = f" and {source} more are bad" if source else ""
        raise ConfigError(f"{cut} of {total} rows are dropped for data.max_length={max_length} (truncation="
                          f"{truncation}: {how}){more}: more than {limit:.0%} of the data; raise data.max_length{key}")


def build(task, tokenizer, settings: EncodeSettings, truncation: str = "keep", num_proc: int | None = None,
          cache_dir: str | None = None, model: str = "the model") -> tuple[dict[str, EncodedRows], dict]:
    """The tokenised splits of `task` (cached when `cache_dir` is set and the task has a fingerprint),
    and what was skipped or cut, per split and reason."""
    fingerprint = task.fingerprint()
    entry = None
    if cache_dir is not None and fingerprint is not None:
        entry = Path(cache_dir) / "tokenized" / cache_key(fingerprint, tokenizer, settings, truncation)
        if (entry / "meta.json").is_file():
            rows, skipped = _load(entry)
            check_cut(skipped, sum(map(len, rows.values())), truncation, settings.max_length, task)
            return rows, skipped
    datasets.disable_progress_bars()
    folder = None
    if entry is not None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{entry.name}.building-", dir=entry.parent))
    try:
        tables, skipped = {}, {}
        max_unk = task.max_unk_fraction
        for name in SPLITS:
            rows = task.train() if name == "train" else task.val()
            table = _tokenise(name, rows, tokenizer, settings, num_proc, folder)
            skipped[name] = dict(_check(name, table))
            tables[name] = table
        check_unknown(tables, tokenizer, max_unk, model)
        if source := task.skipped():
            skipped["source"] = source
        tables = {name: _kept(name, table, skipped[name], truncation, settings.max_length, folder is None)
                  for name, table in tables.items()}
        check_cut(skipped, sum(map(len, tables.values())), truncation, settings.max_length, task)
        if entry is None:
            return {name: EncodedRows(t) for name, t in tables.items()}, skipped
        out = folder / "entry"
        for name, table in tables.items():
            table.save_to_disk(str(out / name))
        (out / "meta.json").write_text(json.dumps({"skipped": skipped}))
        try:
            os.replace(out, entry)  # atomic; fails when another process put its entry there first
        except OSError:
            if not (entry / "meta.json").is_file():
                raise
        return _load(entry)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _load(entry: Path) -> tuple[dict[str, EncodedRows], dict]:
    meta = json.loads((entry / "meta.json").read_text())
    return {name: EncodedRows(datasets.load_from_disk(str(entry / name))) for name in SPLITS}, meta["skipped"]
