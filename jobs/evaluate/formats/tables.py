"""Tables: CSV, Parquet and JSONL, one row per object or detection (columns in the README)."""

from __future__ import annotations

from jobs.evaluate.formats import Format, ReadOptions, Source
from jobs.evaluate.load import Table, read_table


def _reader(name: str):
    def read(source: Source, options: ReadOptions) -> Table:
        return read_table(source.blob, name, options.columns, predictions=options.predictions)
    return read


FORMATS = [
    Format(name="csv", read=_reader("csv"), extensions=(".csv",)),
    Format(name="parquet", read=_reader("parquet"), extensions=(".parquet", ".pq"), magic=(b"PAR1",)),
    Format(name="jsonl", read=_reader("jsonl"), extensions=(".jsonl", ".ndjson")),
]
