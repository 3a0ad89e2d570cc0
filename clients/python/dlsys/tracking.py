"""Runs: :class:`Run` (logging, artifacts, the run's end) and :class:`Metric`."""

from __future__ import annotations

import atexit
import math
import numbers
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, NamedTuple, Optional

from .errors import DlsysError

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

#: The most metric points one ``log-batch`` request carries (the server's limit).
MAX_METRICS_PER_BATCH = 1000
#: The most params, and tags, one request carries (the server's limits).
MAX_PARAMS_PER_BATCH = 100


class Metric(NamedTuple):
    """One point of a metric's history."""

    key: str
    value: float
    step: int
    timestamp: int  # milliseconds since the Unix epoch


class MetricHistory(list):
    """A metric's points in step order (a list of :class:`Metric`), with ``total_points`` (the
    series' real length) and ``downsampled`` (True when the server kept each bucket's min, max
    and last point because the series is longer than ``max_points``)."""

    total_points: int = 0
    downsampled: bool = False

    def to_frame(self):
        """The points as a pandas DataFrame (columns step, value, timestamp)."""
        from ._optional import need_pandas

        pd = need_pandas("MetricHistory.to_frame")
        return pd.DataFrame({"step": [m.step for m in self], "value": [m.value for m in self],
                             "timestamp": [m.timestamp for m in self]})


# Runs with metrics not sent yet: the interpreter's exit sends them (a script that forgot end()).
_open_runs: "weakref.WeakSet[Run]" = weakref.WeakSet()


@atexit.register
def _flush_open_runs() -> None:
    for run in list(_open_runs):
        try:
            run.flush()
        except Exception:  # noqa: BLE001 - at exit there is no one to tell
            pass


def _metric_value(key: str, value: Any) -> float:
    if isinstance(value, bool):
        value = float(value)
    try:
        v = float(value)  # numbers, NumPy scalars, 0-d arrays, torch scalars
    except (TypeError, ValueError):
        raise TypeError(f"metric {key!r}: value {value!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"metric {key!r}: value {v} is not finite; the server stores finite "
                         "numbers only (skip the point, or log a flag such as 'diverged' instead)")
    return v


def _param_value(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return v
    if isinstance(v, numbers.Number):
        try:
            return v.item()  # NumPy scalars
        except AttributeError:
            return str(v)
    return str(v)


def _chunks(items: Mapping[str, Any], n: int) -> Iterable[Dict[str, Any]]:
    keys = list(items)
    for i in range(0, len(keys), n):
        yield {k: items[k] for k in keys[i:i + n]}


class Run:
    """A tracked run. Made by :meth:`Client.start_run` (or read by :meth:`Client.get_run`).

    Use it as a context manager: the run ends ``FINISHED`` when the block ends, ``FAILED`` when
    an exception leaves it (``KILLED`` on Ctrl-C), and buffered metrics are sent first::

        with client.start_run(experiment="digits", params={"lr": 0.1}) as run:
            for step in range(100):
                run.log_metric("loss", loss, step=step)

    Metrics are buffered and sent in batches of up to 1,000 points per request (``log-batch``):
    when the buffer is full, when ``flush_interval`` seconds passed since the oldest buffered
    point, on :meth:`flush` and when the run ends. Params and tags are sent at once.

    Fields of the run as last read: ``id``, ``name``, ``experiment_id``, ``status``,
    ``start_time``, ``end_time``, ``params``, ``tags``, ``metrics`` (latest values),
    ``end_reason``; :meth:`refresh` reads them again.
    """

    def __init__(self, client: "Client", data: Mapping[str, Any], *,
                 flush_interval: float = 2.0, heartbeat_interval: Optional[float] = None):
        self._client = client
        self._data: Dict[str, Any] = dict(data)
        self._buffer: List[Dict[str, Any]] = []
        self._oldest: Optional[float] = None
        self._lock = threading.RLock()
        self.flush_interval = flush_interval
        self._stop = threading.Event()
        self._heartbeat: Optional[threading.Thread] = None
        if heartbeat_interval:
            self._start_heartbeat(heartbeat_interval)
        _open_runs.add(self)

    # ---- fields ----
    @property
    def id(self) -> int:
        return int(self._data["id"])

    run_id = id

    @property
    def name(self) -> str:
        return self._data.get("name", "")

    @property
    def experiment_id(self) -> int:
        return int(self._data.get("experiment_id", 0))

    @property
    def status(self) -> str:
        return self._data.get("status", "")

    @property
    def start_time(self) -> Optional[int]:
        return self._data.get("start_time")

    @property
    def end_time(self) -> Optional[int]:
        return self._data.get("end_time")

    @property
    def end_reason(self) -> str:
        return self._data.get("end_reason", "")

    @property
    def params(self) -> Dict[str, str]:
        return dict(self._data.get("params") or {})

    @property
    def tags(self) -> Dict[str, str]:
        return dict(self._data.get("tags") or {})

    @property
    def metrics(self) -> Dict[str, float]:
        """The latest value of each metric, as last read (:meth:`refresh` to read again)."""
        return {k: (v["value"] if isinstance(v, dict) else v)
                for k, v in (self._data.get("metrics") or {}).items()}

    def to_dict(self) -> Dict[str, Any]:
        """The run as the server answered it."""
        return dict(self._data)

    def __repr__(self) -> str:
        return f"<Run id={self._data.get('id')} name={self.name!r} status={self.status}>"

    def refresh(self) -> "Run":
        """Sends buffered metrics, then reads the run again from the server."""
        self.flush()
        self._data = self._client._get_run_data(self.id)
        return self

    # ---- logging ----
    def log_metric(self, key: str, value: Any, step: Optional[int] = None,
                   timestamp: Optional[int] = None) -> None:
        """Buffers one point of metric ``key`` (sent in batches; see the class).

        ``step`` defaults to 0; ``timestamp`` (ms since the epoch) to now. A value that is not
        finite (NaN, inf) is refused with ValueError: the server stores finite numbers only.
        """
        point = {"key": str(key), "value": _metric_value(key, value),
                 "step": int(step) if step is not None else 0,
                 "timestamp": int(timestamp) if timestamp is not None else int(time.time() * 1000)}
        with self._lock:
            self._buffer.append(point)
            if self._oldest is None:
                self._oldest = time.monotonic()
            full = len(self._buffer) >= MAX_METRICS_PER_BATCH
            stale = time.monotonic() - self._oldest >= self.flush_interval
        if full or stale:
            self.flush()

    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None,
                    timestamp: Optional[int] = None) -> None:
        """Buffers one point of each metric of ``metrics`` (key -> value), at one step."""
        ts = int(timestamp) if timestamp is not None else int(time.time() * 1000)
        for k, v in metrics.items():
            self.log_metric(k, v, step=step, timestamp=ts)

    def flush(self) -> None:
        """Sends the buffered metric points now, in requests of at most 1,000 points."""
        with self._lock:
            while self._buffer:
                batch = self._buffer[:MAX_METRICS_PER_BATCH]
                self._client._log_batch(self.id, metrics=batch)
                del self._buffer[:len(batch)]
            self._oldest = None

    def log_param(self, key: str, value: Any) -> None:
        """Records one param (written once: logging another value for it is an error)."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Records params (key -> value); sent at once, at most 100 per request."""
        for chunk in _chunks({str(k): _param_value(v) for k, v in params.items()},
                             MAX_PARAMS_PER_BATCH):
            self._client._log_batch(self.id, params=chunk)

    def set_tag(self, key: str, value: Any) -> None:
        """Sets one tag (tags may change)."""
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Sets tags (key -> value); sent at once, at most 100 per request."""
        for chunk in _chunks({str(k): _param_value(v) for k, v in tags.items()},
                             MAX_PARAMS_PER_BATCH):
            self._client._log_batch(self.id, tags=chunk)

    # ---- artifacts ----
    def log_artifact(self, local_path: str, artifact_path: Optional[str] = None) -> List[Dict]:
        """Uploads a file (or every file under a directory) as artifacts of the run.

        The file ``model.onnx`` becomes ``model.onnx``, or ``<artifact_path>/model.onnx``; a
        directory ``out`` becomes ``out/...`` (or ``<artifact_path>/...``). Returns the stored
        artifacts (``path``, ``sha256``, ``size``, ``deduplicated``).
        """
        return self._client.log_artifact(self.id, local_path, artifact_path)

    def log_text(self, text: str, artifact_file: str) -> Dict[str, Any]:
        """Stores ``text`` (UTF-8) as the artifact ``artifact_file``."""
        return self._client._put_artifact(self.id, artifact_file, text.encode("utf-8"))

    def log_dict(self, obj: Any, artifact_file: str) -> Dict[str, Any]:
        """Stores ``obj`` as JSON in the artifact ``artifact_file``."""
        import json

        return self._client._put_artifact(
            self.id, artifact_file, json.dumps(obj, indent=2, sort_keys=True).encode("utf-8"))

    def list_artifacts(self, prefix: Optional[str] = None) -> List[Dict[str, Any]]:
        """The run's artifacts (``path``, ``sha256``, ``size``, ``created_at``)."""
        return self._client.list_artifacts(self.id, prefix)

    def download_artifact(self, path: str, dst_path: Optional[str] = None) -> str:
        """Downloads an artifact (or every artifact under a directory path); returns the local
        path. See :meth:`Client.download_artifact`."""
        return self._client.download_artifact(self.id, path, dst_path)

    def get_metric_history(self, key: str, max_points: Optional[int] = None,
                           as_frame: bool = False):
        """The history of metric ``key`` (buffered points are sent first)."""
        self.flush()
        return self._client.get_metric_history(self.id, key, max_points=max_points,
                                               as_frame=as_frame)

    # ---- the end ----
    def end(self, status: str = "FINISHED") -> "Run":
        """Sends buffered metrics and sets the run's final status (FINISHED, FAILED, KILLED)."""
        self._stop.set()
        _open_runs.discard(self)
        try:
            self.flush()
        finally:
            self._data = self._client._set_run_status(self.id, status.upper())
        return self

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.end("FINISHED")
        else:
            status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
            try:
                self.end(status)
            except DlsysError:
                pass  # the block's own exception is the one to see
        return False

    # ---- heartbeats ----
    def _start_heartbeat(self, interval: float) -> None:
        def beat():
            transport = self._client._transport
            try:
                while not self._stop.wait(interval):
                    try:
                        transport.request("POST", f"/api/v1/runs/{self.id}/heartbeat",
                                          timeout=10)
                    except DlsysError:
                        pass  # the next beat tries again; the server ends a run that has none
            finally:
                transport.close()  # this thread's connection

        self._heartbeat = threading.Thread(target=beat, name=f"dlsys-run-{self.id}-heartbeat",
                                           daemon=True)
        self._heartbeat.start()


def walk_files(root: str) -> Iterable[str]:
    """Regular files under ``root``, relative to it, in a stable order."""
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(d, f)
            if os.path.isfile(full):
                yield os.path.relpath(full, root)
