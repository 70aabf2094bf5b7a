"""Tables of coordinates from CSV or Parquet files: read, find columns by name, coordinates as floats.

The shared mechanics of every reader of user tables with lat/lon columns (training manifests, GPS
galleries, ground-truth manifests, cells manifests, kNN gallery manifests); each caller keeps its own
format logic. pyarrow only, so a CLI command that reads a table does not import torch.

- `read_table`: Parquet when the file starts with the Parquet magic bytes, CSV otherwise (tab-separated
  for a `.tsv` name), whatever the extension; a missing or unreadable file (an empty one included)
  raises an InputError of one line.
- `find_column` / `require_column`: the first of some candidate names present, in any letter case.
- `float_column`: a column as float64, NaN for nulls and for text that is not a number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from geotag.errors import InputError

PARQUET_MAGIC = b"PAR1"
LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "longitude", "lng")
NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
"""Text that reads as a decimal number (surrounding spaces allowed)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def text_convert(**options: Any) -> pacsv.ConvertOptions:
    """CSV conversion where only an empty cell is null, so text such as "NA" (Namibia) stays text."""
    return pacsv.ConvertOptions(null_values=[""], strings_can_be_null=True, **options)


def read_table(
    path: Path,
    what: str,
    *,
    parquet: bool | None = None,
    columns: Sequence[str] | None = None,
    convert: pacsv.ConvertOptions | None = None,
    message: str = "cannot read {what} {path}: {reason}",
) -> pa.Table:
    """A CSV or Parquet file as a table; InputError (one line) when it is missing or cannot be read.

    `what` names the file in messages ("manifest", "gallery file"). `parquet` None tells the kind by
    the file's first bytes; True / False forces it. `columns` selects a Parquet file's columns (a CSV's
    are chosen by `convert`, its pyarrow ConvertOptions: see `text_convert`). `message` is the text of
    the error for an unreadable file, with {what}, {path} and {reason} filled in.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        if parquet is None:
            with path.open("rb") as fh:
                parquet = fh.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC
        if parquet:
            return pq.read_table(path, columns=None if columns is None else list(columns))
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        parse = pacsv.ParseOptions(delimiter=delimiter)
        return pacsv.read_csv(path, parse_options=parse, convert_options=convert)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(message.format(what=what, path=path, reason=first_line(exc))) from exc


def find_column(table: pa.Table, names: Sequence[str]) -> str | None:
    """The table's actual name of the first of `names` (lower case) it has, in any letter case."""
    by_lower = {name.lower(): name for name in table.column_names}
    return next((by_lower[n] for n in names if n in by_lower), None)


def require_column(
    table: pa.Table, names: Sequence[str], where: str, error: type[InputError] = InputError
) -> str:
    """`find_column`, or `error` saying that `where` (e.g. "manifest m.csv") needs one of `names`."""
    found = find_column(table, names)
    if found is None:
        have = ", ".join(table.column_names) or "none"
        raise error(f"{where} needs a {'/'.join(names)} column (any case); has: {have}")
    return found


def float_column(
    table: pa.Table, name: str, where: str, *, strict: bool = False, error: type[InputError] = InputError
) -> np.ndarray:
    """Column `name` as float64 with NaN for nulls; text that is not a number becomes NaN too, or with
    `strict` fails the cast. A column that cannot be cast raises `error` naming `where` and the column."""
    column = table.column(name)
    if not strict and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        is_number = pc.match_substring_regex(column, NUMBER)
        column = pc.if_else(is_number, pc.utf8_trim_whitespace(column), pa.scalar(None, column.type))
    try:
        values = pc.cast(column, pa.float64(), safe=False)
    except (pa.ArrowException, ValueError) as exc:
        raise error(f"{where}: column {name} is not numeric ({first_line(exc)})") from exc
    return values.to_numpy(zero_copy_only=False).astype(np.float64)


TABLE_FORMATS = (".parquet", ".csv")
"""What a small result table (query places, location embeddings) may be written as, by extension."""


def table_format(out: Path) -> str:
    """The output kind of `out` by its extension; one InputError line for any other."""
    suffix = Path(out).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise InputError(f"--out must end in .parquet or .csv, got {out}")
    return suffix


@contextmanager
def table_writer(out: Path, schema: pa.Schema) -> Iterator[Callable[[pa.Table], None]]:
    """A function that appends tables of `schema` to `out`, Parquet or CSV by extension; the file
    appears whole (geotag.io.durable) when the block ends, so rows stream instead of piling up."""
    from geotag.io.durable import atomic_path

    kind = table_format(out)
    with atomic_path(Path(out)) as tmp:
        writer = pq.ParquetWriter(tmp, schema) if kind == ".parquet" else pacsv.CSVWriter(tmp, schema)
        try:
            yield writer.write_table
        finally:
            writer.close()


def write_table(table: pa.Table, out: Path) -> None:
    """Write a whole table as Parquet or CSV (by extension), atomically (geotag.io.durable)."""
    from geotag.io.durable import atomic_path

    kind = table_format(out)
    with atomic_path(Path(out)) as tmp:
        if kind == ".parquet":
            pq.write_table(table, tmp)
        else:
            pacsv.write_csv(table, tmp)
