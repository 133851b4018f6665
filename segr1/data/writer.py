"""`DatasetWriter`: streams validated rows into a Seg-R1 Parquet file (see `segr1.data.schema`).

Rows are buffered and flushed in row groups of `row_group_size` so readers can load one group at a time.
The file is written under a temporary name and renamed on a clean close, so a crash never leaves a
half-written dataset at `path`.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Self

import pyarrow as pa
import pyarrow.parquet as pq

from segr1.data.errors import DataError
from segr1.data.schema import SCHEMA, Row, validate_row

# Image and mask bytes are already compressed; compressing them again costs CPU for nothing.
_COMPRESSION = {name: ("none" if SCHEMA.field(name).type == pa.binary() else "zstd") for name in SCHEMA.names}


class DatasetWriter:
    """Write `Row`s to `path`. Use as a context manager; `close()` returns the number of rows written."""

    def __init__(self, path: str | os.PathLike, *, row_group_size: int = 32, validate: bool = True):
        if row_group_size < 1:
            raise ValueError(f"row_group_size must be >= 1, got {row_group_size}")
        self.path = Path(path)
        self.row_group_size = row_group_size
        self.validate = validate
        self._tmp_path = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self._tmp_path, SCHEMA, compression=_COMPRESSION)
        self._buffer: list[Row] = []
        self._seen_ids: set[str] = set()
        self.rows_written = 0

    def write(self, row: Row) -> None:
        """Validate `row` (decoding its image and masks when `validate`), then buffer it."""
        index = self.rows_written + len(self._buffer)
        if row.sample_id in self._seen_ids:
            problem = f"duplicate sample_id {row.sample_id!r}"
            raise DataError(str(self.path), problem, row=index, column="sample_id")
        if self.validate:
            validate_row(row, str(self.path), index)
        self._seen_ids.add(row.sample_id)
        self._buffer.append(row)
        if len(self._buffer) >= self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        columns = {name: [getattr(row, name) for row in self._buffer] for name in SCHEMA.names}
        self._writer.write_table(pa.Table.from_pydict(columns, schema=SCHEMA))
        self.rows_written += len(self._buffer)
        self._buffer.clear()

    def close(self) -> int:
        """Flush, close and move the file into place. Returns the number of rows written."""
        self._flush()
        self._writer.close()
        os.replace(self._tmp_path, self.path)
        return self.rows_written

    def abort(self) -> None:
        """Close and delete the partial file (used when a conversion fails)."""
        self._writer.close()
        self._tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
