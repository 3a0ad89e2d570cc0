"""The Open Inference Protocol (KServe v2) request and response, JSON or binary tensors."""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import _optional
from ._datasets import _reshape
from .errors import DlsysError

# v2 datatype -> numpy dtype name
_NP_OF = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}
_V2_OF = {v: k for k, v in _NP_OF.items()}


class InferResult(dict):
    """The outputs of an inference, by name (NumPy arrays, or nested lists without NumPy).

    Also ``model_name``, ``model_version`` (the version that answered: a canary's shows here)
    and ``id`` (the request id, to send labels as feedback).
    """

    model_name: Optional[str] = None
    model_version: Optional[str] = None
    id: Optional[str] = None


def _shape_of(x: Any) -> List[int]:
    shape = []
    while isinstance(x, (list, tuple)):
        shape.append(len(x))
        if not x:
            break
        x = x[0]
    return shape


def _flatten(x: Any, out: List[Any]) -> None:
    if isinstance(x, (list, tuple)):
        for e in x:
            _flatten(e, out)
    else:
        out.append(x)


def _guess_datatype(flat: Sequence[Any]) -> str:
    kinds = set()
    for v in flat:
        if v is None:
            continue
        if isinstance(v, bool):
            kinds.add("BOOL")
        elif isinstance(v, int):
            kinds.add("INT64")
        elif isinstance(v, float):
            kinds.add("FP64")
        elif isinstance(v, (str, bytes)):
            kinds.add("BYTES")
        else:
            kinds.add("other")
    if kinds == {"INT64", "FP64"}:
        return "FP64"
    if len(kinds) == 1 and "other" not in kinds:
        return kinds.pop()
    if not kinds:
        return "FP32"
    raise ValueError(f"cannot tell the datatype of values of kinds {sorted(kinds)}")


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        if math.isnan(v):
            return None  # a missing value (column form); the server says when it is not allowed
        raise ValueError("an input holds an infinite value, which JSON cannot carry; "
                         "use binary=True")
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return v


class _Tensor:
    def __init__(self, name: str, datatype: str, shape: List[int], flat: Optional[List[Any]],
                 raw: Optional[bytes]):
        self.name, self.datatype, self.shape, self.flat, self.raw = name, datatype, shape, flat, raw


def _tensor(name: str, value: Any, datatype: Optional[str], binary: bool) -> _Tensor:
    np = _optional.numpy()
    if np is not None and not isinstance(value, (list, tuple)) and not isinstance(
            value, np.ndarray):
        value = np.asarray(value)
    if np is not None and isinstance(value, np.ndarray):
        arr = value
        if datatype is None:
            if arr.dtype.kind in "OUS":
                datatype = "BYTES"
            else:
                datatype = _V2_OF.get(arr.dtype.name)
                if datatype is None:
                    raise ValueError(f"input {name!r}: NumPy dtype {arr.dtype} has no v2 datatype")
        shape = [int(d) for d in arr.shape]
        if datatype == "BYTES":
            flat = [x.decode("utf-8") if isinstance(x, bytes) else (None if x is None else str(x))
                    for x in arr.ravel().tolist()]
            raw = None
            if binary:
                raw = b"".join(struct.pack("<I", len(b)) + b for b in
                               (s.encode("utf-8") for s in (f or "" for f in flat)))
            return _Tensor(name, datatype, shape, flat, raw)
        np_name = _NP_OF.get(datatype)
        if np_name is None:
            raise ValueError(f"input {name!r}: datatype {datatype} is not supported by this client")
        arr = np.ascontiguousarray(arr, dtype=np.dtype(np_name).newbyteorder("<"))
        if binary:
            return _Tensor(name, datatype, shape, None, arr.tobytes())
        return _Tensor(name, datatype, shape, [_json_value(v) for v in arr.ravel().tolist()], None)
    # nested lists, no NumPy needed
    shape = _shape_of(value)
    flat: List[Any] = []
    _flatten(value, flat)
    if datatype is None:
        datatype = _guess_datatype(flat)
    if datatype.startswith("FP"):
        flat = [None if v is None else float(v) for v in flat]
    elif datatype.startswith(("INT", "UINT")):
        flat = [int(v) for v in flat]
    elif datatype == "BOOL":
        flat = [bool(v) for v in flat]
    if binary:
        if datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(b)) + b for b in
                           (s.encode("utf-8") if isinstance(s, str) else bytes(s or b"")
                            for s in flat))
        else:
            fmt = {"BOOL": "?", "UINT8": "B", "INT8": "b", "INT16": "h", "UINT16": "H",
                   "INT32": "i", "UINT32": "I", "INT64": "q", "UINT64": "Q", "FP16": "e",
                   "FP32": "f", "FP64": "d"}[datatype]
            raw = struct.pack("<%d%s" % (len(flat), fmt), *flat)
        return _Tensor(name, datatype, shape, None, raw)
    return _Tensor(name, datatype, shape, [_json_value(v) for v in flat], None)


def encode_request(inputs: Mapping[str, Any], model_inputs: Mapping[str, str],
                   outputs: Optional[Sequence[str]], parameters: Optional[Mapping[str, Any]],
                   binary: bool, request_id: Optional[str]) -> Tuple[bytes, Dict[str, str]]:
    """The body and headers of an infer request. ``model_inputs``: name -> the model's datatype,
    used to convert each input (a float64 array to FP32 for an FP32 input, ...)."""
    tensors = [_tensor(str(name), value, model_inputs.get(str(name)), binary)
               for name, value in inputs.items()]
    head: Dict[str, Any] = {"inputs": []}
    if request_id:
        head["id"] = request_id
    for t in tensors:
        j: Dict[str, Any] = {"name": t.name, "shape": t.shape, "datatype": t.datatype}
        if binary:
            j["parameters"] = {"binary_data_size": len(t.raw)}
        else:
            j["data"] = t.flat
        head["inputs"].append(j)
    params = dict(parameters or {})
    if outputs:
        head["outputs"] = [{"name": o, "parameters": {"binary_data": True}} if binary
                           else {"name": o} for o in outputs]
    elif binary:
        params["binary_data_output"] = True
    if params:
        head["parameters"] = params
    text = json.dumps(head, allow_nan=False, separators=(",", ":")).encode("utf-8")
    if not binary:
        return text, {"Content-Type": "application/json"}
    body = text + b"".join(t.raw for t in tensors)
    return body, {"Content-Type": "application/octet-stream",
                  "Inference-Header-Content-Length": str(len(text))}


def _decode_bytes(raw: bytes, n: int) -> List[Any]:
    out, pos = [], 0
    for _ in range(n):
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        b = raw[pos:pos + size]
        pos += size
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(b)
    return out


def decode_response(body: bytes, headers: Mapping[str, str], as_numpy: bool) -> InferResult:
    """The outputs of an infer answer, JSON or with binary tensors."""
    hlen = headers.get("inference-header-content-length")
    try:
        n = int(hlen) if hlen else len(body)
        head = json.loads(body[:n].decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DlsysError(f"the inference answer is not the protocol's JSON: {e}",
                         code="BAD_RESPONSE") from None
    rest, pos = body[n:], 0
    np = _optional.numpy() if as_numpy else None
    result = InferResult()
    result.model_name = head.get("model_name")
    result.model_version = head.get("model_version")
    result.id = head.get("id")
    for o in head.get("outputs", []):
        name, dt, shape = o["name"], o["datatype"], [int(d) for d in o.get("shape", [])]
        count = 1
        for d in shape:
            count *= d
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = rest[pos:pos + size]
            pos += size
            if dt == "BYTES":
                flat = _decode_bytes(raw, count)
            elif np is not None:
                arr = np.frombuffer(raw, dtype=np.dtype(_NP_OF[dt]).newbyteorder("<"))
                result[name] = arr.astype(_NP_OF[dt]).reshape(shape)
                continue
            else:
                fmt = {"BOOL": "?", "UINT8": "B", "INT8": "b", "INT16": "h", "UINT16": "H",
                       "INT32": "i", "UINT32": "I", "INT64": "q", "UINT64": "Q", "FP16": "e",
                       "FP32": "f", "FP64": "d"}[dt]
                flat = list(struct.unpack("<%d%s" % (count, fmt), raw))
        else:
            flat = o.get("data", [])
            if flat and isinstance(flat[0], list):  # nested JSON: flatten first
                f2: List[Any] = []
                _flatten(flat, f2)
                flat = f2
        if np is not None:
            if dt == "BYTES":
                arr = np.empty(len(flat), dtype=object)
                arr[:] = flat
            else:
                arr = np.array([np.nan if v is None else v for v in flat], dtype=_NP_OF.get(dt))
            result[name] = arr.reshape(shape)
        else:
            result[name] = _reshape(flat, shape) if shape else (flat[0] if flat else None)
    return result
