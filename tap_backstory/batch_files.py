"""BATCH files that are complete and in place before their BATCH message names them.

Why not the SDK's `StorageTarget.open`: it writes through an fsspec *transaction* (a temporary file, moved into
place when the transaction ends). The transaction belongs to the filesystem object, which fsspec shares across
the process, not to the file. A stream reads its records while its batch file is open, and reading a parent
(`intent_feed_exports`) syncs its child (`enriched_contact_records`), which opens, and ends, transactions of its
own meanwhile: the child's transaction replaces the parent's, the parent's file is never moved into place, and
its BATCH message names a file that does not exist (docs/decisions.md, issue 21).

`publish` writes the file itself instead: under a unique partial name next to the final one, renamed into place
(atomically) when it is complete. Storage that is not a local folder (`s3://...`) gets the finished local file
copied through `StorageTarget.open` in one go, so no record is read, and no other stream runs, while that
transaction is open.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import typing as t
import uuid
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from tap_backstory.client import ConfigError

if t.TYPE_CHECKING:
    from tap_backstory.sdk import StorageTarget

COPY_CHUNK = 1 << 20
PARQUET_NEEDS_PYARROW = (
    "batch_config.encoding.format parquet needs pyarrow: install tap-backstory[parquet] (or pyarrow) with the tap"
)


def local_path(url: str) -> Path | None:
    """The local path of a `file://` URL; None for any other storage."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None
    return Path(url2pathname(parsed.path))


@contextlib.contextmanager
def publish(storage: StorageTarget, filename: str) -> t.Iterator[t.BinaryIO]:
    """A binary file to write `filename` into; it appears in `storage`, complete, when the block ends without
    an error, and never otherwise (the partial file is removed)."""
    final = local_path(storage.get_url(filename))
    if final is not None:
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
    else:
        handle, name = tempfile.mkstemp(prefix="tap-backstory-batch-")
        os.close(handle)
        partial = Path(name)
    try:
        # "x": a fresh file, created with the usual permissions (0666 less the umask), readable by the target.
        with open(partial, "xb" if final is not None else "wb") as out:
            yield out
        if final is not None:
            os.replace(partial, final)
        else:
            with open(partial, "rb") as source, storage.open(filename, "wb") as target:
                shutil.copyfileobj(source, target, COPY_CHUNK)
    finally:
        partial.unlink(missing_ok=True)


def write_parquet(records: list[dict], out: t.BinaryIO, compression: str | None) -> None:
    """One parquet file of `records`, with a column for every top-level key any of them has (a struct field for
    every key any nested object has); absent keys read back as null. Parquet needs pyarrow (`singer-sdk[parquet]`)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(PARQUET_NEEDS_PYARROW) from None
    array = pa.array(records)  # one struct type inferred from every record
    if _has_empty_struct(array.type):  # parquet cannot store an object type without fields: `{}` becomes null
        array = pa.array([_empty_objects_as_null(record) for record in records])
    pq.write_table(pa.Table.from_struct_array(array), out, compression=compression or "snappy")


def _has_empty_struct(arrow_type) -> bool:
    import pyarrow.types

    if pyarrow.types.is_struct(arrow_type) and arrow_type.num_fields == 0:
        return True
    return any(_has_empty_struct(arrow_type.field(i).type) for i in range(arrow_type.num_fields))


def _empty_objects_as_null(value):
    if isinstance(value, dict):
        return {key: _empty_objects_as_null(item) for key, item in value.items()} or None
    if isinstance(value, list):
        return [_empty_objects_as_null(item) for item in value]
    return value
