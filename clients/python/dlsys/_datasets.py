"""Dataset helpers: what a push sends (NPY files, JSONL rows) and how rows come back.

The server exports a version's rows as CSV (``GET .../versions/{ref}/rows``) with a header row;
the version's manifest gives each column's type (``int64``, ``float64``, ``string``,
``tensor<u8>``, ``tensor<f32>`` with a per-row ``shape``). An empty cell is a null; a tensor
cell is a flat JSON array of the row's elements.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import struct
import sys
from typing import Any, Dict, Iterable, List, Mapping, Sequence

from . import _optional

# A single CSV field may be a whole image row: allow big fields.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def jsonable(v: Any, where: str) -> Any:
    """A cell as a JSON value for a JSONL push (None for a missing value)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            raise ValueError(f"{where} is {v}: JSON and the dataset store hold finite numbers only")
        return v
    if isinstance(v, str):
        return v
    np = _optional.numpy()
    if np is not None:
        if isinstance(v, np.ndarray):
            if not np.issubdtype(v.dtype, np.number) and v.dtype != np.bool_:
                raise ValueError(f"{where}: an array of {v.dtype} cannot be a tensor cell")
            return jsonable(v.tolist(), where)
        if isinstance(v, np.generic):
            return jsonable(v.item(), where)
    pd = _optional.pandas()
    if pd is not None:
        try:
            if v is pd.NA or v is pd.NaT:
                return None
        except AttributeError:
            pass
        if isinstance(v, pd.Timestamp):
            return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [jsonable(x, where) for x in v]
    if isinstance(v, (datetime.date, datetime.datetime, datetime.time)):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return str(v)


def write_jsonl_rows(rows: Iterable[Mapping[str, Any]], out) -> int:
    """Writes dict rows as JSON lines to the binary file ``out``; returns the row count."""
    n = 0
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"row {i} is a {type(row).__name__}, not a dict of column: value")
        obj = {str(k): jsonable(v, f"row {i}, column {k!r}") for k, v in row.items()}
        out.write(json.dumps(obj, allow_nan=False, separators=(",", ":")).encode("utf-8"))
        out.write(b"\n")
        n += 1
    if n == 0:
        raise ValueError("there are no rows to push")
    return n


def write_jsonl_columns(columns: Mapping[str, Sequence[Any]], out) -> int:
    """Writes a dict of column -> values (all of one length) as JSON lines."""
    names = [str(k) for k in columns]
    cols = [columns[k] for k in columns]
    if not cols:
        raise ValueError("there are no columns to push")
    lengths = {name: len(c) for name, c in zip(names, cols)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"the columns have different lengths: {lengths}")
    return write_jsonl_rows((dict(zip(names, vals)) for vals in zip(*cols)), out)


def write_jsonl_frame(df, out) -> int:
    """Writes a pandas DataFrame as JSON lines (NaN and None become nulls)."""
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        raise ValueError(f"the DataFrame's column names are not unique: {names}")
    return write_jsonl_rows(
        (dict(zip(names, vals)) for vals in df.itertuples(index=False, name=None)), out)


# ---- reading rows back ----

def _columns(schema: Mapping[str, Any]) -> List[Dict[str, Any]]:
    return [c for c in schema.get("columns", []) if not str(c.get("name", "")).startswith("__")]


def _reshape(flat: List[Any], shape: Sequence[int]) -> Any:
    if len(shape) <= 1:
        return flat
    step = 1
    for d in shape[1:]:
        step *= d
    return [_reshape(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _f32(values: List[Any]) -> List[float]:
    """float32 elements (written in their shortest decimal form) as the exact Python floats
    of those float32 values."""
    return list(struct.unpack("<%df" % len(values), struct.pack("<%df" % len(values), *values)))


def parse_rows(text_stream: io.TextIOBase, schema: Mapping[str, Any]) -> Dict[str, List[Any]]:
    """The CSV export as a dict column -> list of Python values (None for a null)."""
    cols = _columns(schema)
    by_name = {c["name"]: c for c in cols}
    reader = csv.reader(text_stream)
    try:
        header = next(reader)
    except StopIteration:
        return {c["name"]: [] for c in cols}
    out: Dict[str, List[Any]] = {name: [] for name in header}
    convs = []
    for name in header:
        c = by_name.get(name, {"type": "string"})
        t = c.get("type", "string")
        if t == "int64":
            convs.append(lambda s: int(s) if s else None)
        elif t == "float64":
            convs.append(lambda s: float(s) if s else None)
        elif t == "tensor<f32>":
            shape = list(c.get("shape") or [])
            convs.append(lambda s, shape=shape: _reshape(_f32(json.loads(s)), shape)
                         if s else None)
        elif t.startswith("tensor"):
            shape = list(c.get("shape") or [])
            convs.append(lambda s, shape=shape: _reshape(json.loads(s), shape) if s else None)
        else:
            convs.append(lambda s: s if s != "" else None)
    lists = [out[name] for name in header]
    for line, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise ValueError(f"line {line} of the exported rows has {len(row)} fields, "
                             f"the header {len(header)}")
        for conv, dst, cell in zip(convs, lists, row):
            dst.append(conv(cell))
    return out


def to_numpy(columns: Dict[str, List[Any]], schema: Mapping[str, Any]) -> Dict[str, Any]:
    """Columns as NumPy arrays: int64 (float64 with NaN where a value is null), float64,
    object (strings, None for a null), uint8 or float32 arrays of shape [rows, *shape]."""
    np = _optional.need_numpy("loading a dataset as NumPy arrays")
    by_name = {c["name"]: c for c in _columns(schema)}
    out = {}
    for name, values in columns.items():
        c = by_name.get(name, {"type": "string"})
        t = c.get("type", "string")
        has_null = any(v is None for v in values)
        if t == "int64":
            out[name] = (np.array([np.nan if v is None else v for v in values], dtype=np.float64)
                         if has_null else np.array(values, dtype=np.int64))
        elif t == "float64":
            out[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        elif t.startswith("tensor"):
            shape = tuple(c.get("shape") or [])
            dtype = np.uint8 if t == "tensor<u8>" else np.float32
            if has_null:
                fill = np.zeros(shape, dtype=dtype)
                values = [fill if v is None else v for v in values]
            arr = np.array(values, dtype=dtype) if values else np.zeros((0,) + shape, dtype)
            out[name] = arr.reshape((len(values),) + shape)
        else:
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            out[name] = arr
    return out


def to_pandas(columns: Dict[str, List[Any]], schema: Mapping[str, Any]):
    """Columns as a DataFrame: int64 (pandas' nullable Int64 when a value is null), float64,
    object strings (None for a null), and a tensor column as one NumPy array per cell."""
    pd = _optional.need_pandas("loading a dataset as a DataFrame")
    by_name = {c["name"]: c for c in _columns(schema)}
    data = {}
    arrays = to_numpy(columns, schema) if _optional.numpy() is not None else {}
    for name, values in columns.items():
        t = by_name.get(name, {"type": "string"}).get("type", "string")
        if t == "int64":
            if any(v is None for v in values):
                data[name] = pd.array(values, dtype="Int64")
            else:
                data[name] = pd.Series(arrays[name], dtype="int64")
        elif t == "float64":
            data[name] = pd.Series(arrays[name], dtype="float64")
        elif t.startswith("tensor"):
            s = pd.Series([None] * len(values), dtype=object)
            arr = arrays[name]
            for i in range(len(values)):
                s.iat[i] = arr[i]
            data[name] = s
        else:
            data[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data, columns=list(columns))
