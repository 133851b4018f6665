"""The one error type for bad dataset input: it names the file, and where known the row and the column."""

from __future__ import annotations


class DataError(ValueError):
    """Bad dataset input, e.g. `X.parquet, row 17, column 'mask': undecodable image bytes`."""

    def __init__(self, path: str, problem: str, *, row: int | None = None, column: str | None = None):
        self.path, self.problem, self.row, self.column = str(path), problem, row, column
        where = self.path
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {problem}")
