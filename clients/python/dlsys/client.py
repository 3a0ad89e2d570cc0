"""The dlsys client: :class:`Client`, one object for every route of a dlsys server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _datasets, _optional, _v2
from ._http import Transport, quote_path, quote_segment
from .errors import DlsysError, DlsysTimeout
from .tracking import Metric, MetricHistory, Run, walk_files

__all__ = ["Client", "DEFAULT_URL"]

#: The server a client talks to when neither ``url=`` nor ``$DLSYS_URL`` says otherwise.
DEFAULT_URL = "http://127.0.0.1:8080"

PathLike = Union[str, "os.PathLike[str]"]

_JOB_DONE = ("SUCCEEDED", "FAILED", "CANCELLED")
_PIPELINE_RUN_DONE = ("SUCCEEDED", "FAILED", "CANCELLED")
_FORMAT_OF_EXT = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
                  ".ndjson": "jsonl", ".json": "jsonl", ".npy": "npy", ".idx": "idx"}
# Files the push sends as the request body; the others go through a staged upload.
_BODY_FORMATS = ("csv", "tsv", "jsonl")


def _split_text(split: Any) -> Optional[str]:
    if split is None:
        return None
    if isinstance(split, str):
        return split
    return ",".join(repr(float(x)) for x in split)


def _model_ref(model: str, ref: Optional[Union[str, int]]) -> Tuple[str, Optional[str]]:
    """'digits@3' -> ('digits', '3'); an explicit ref wins."""
    if "@" in model:
        name, _, at = model.partition("@")
        return name, str(ref) if ref is not None else at
    return model, None if ref is None else str(ref)


def _file_format(path: str) -> str:
    if os.path.isdir(path):
        return "images"
    base = os.path.basename(path).lower()
    if base.endswith("-ubyte"):
        return "idx"
    ext = os.path.splitext(base)[1]
    fmt = _FORMAT_OF_EXT.get(ext)
    if fmt is None:
        raise ValueError(f"cannot tell the format of {path!r} from its name: pass format= "
                         "(csv, tsv, jsonl, npy, idx or images)")
    return fmt


class Client:
    """A client of one dlsys server.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8080``; default ``$DLSYS_URL``, else
            ``$DLSYS_SERVER`` (what the CLI reads), else ``http://127.0.0.1:8080``.
        token: an API token for a server run with ``--auth`` (sent as
            ``Authorization: Bearer``); default ``$DLSYS_TOKEN``.
        timeout: seconds to wait for each answer (pushes, uploads and downloads wait at least
            5 minutes for the server's answer, since they move whole files).
        retries: how many times a request answered 503 (the server is busy) is sent again,
            with backoff.

    Every failed call raises :class:`dlsys.DlsysError` with the HTTP status, the server's
    error code and its message. The client keeps one HTTP connection per thread; it may be
    shared between threads.
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None,
                 timeout: float = 30, retries: int = 3):
        url = url or os.environ.get("DLSYS_URL") or os.environ.get("DLSYS_SERVER") or DEFAULT_URL
        if token is None:
            token = os.environ.get("DLSYS_TOKEN") or None
        self._transport = Transport(url, token, float(timeout), retries)
        self._model_meta: Dict[Tuple[str, Optional[int]], Tuple[float, Dict[str, Any]]] = {}

    @property
    def url(self) -> str:
        return self._transport.url

    @property
    def timeout(self) -> float:
        return self._transport.timeout

    def __repr__(self) -> str:
        return f"<dlsys.Client {self.url}{' (token)' if self._transport.token else ''}>"

    def close(self) -> None:
        """Closes the client's connections (a later call opens another)."""
        self._transport.close_all()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- plumbing ----
    def _call(self, method: str, path: str, body: Any = None, query: Optional[Mapping] = None,
              timeout: Optional[float] = None, ok: Sequence[int] = ()) -> Any:
        return self._transport.request(method, path, query=query, json_body=body,
                                       timeout=timeout, ok=ok).json()

    def _pages(self, path: str, key: str, query: Optional[Dict[str, Any]] = None,
               max_results: Optional[int] = None) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        q = dict(query or {})
        token = None
        while max_results is None or len(out) < max_results:
            q["page_size"] = 1000 if max_results is None else min(1000, max_results - len(out))
            q["page_token"] = token
            page = self._call("GET", path, query=q)
            out.extend(page.get(key, []))
            token = page.get("next_page_token")
            if not token:
                break
        return out

    def _long_timeout(self, timeout: Optional[float]) -> float:
        return timeout if timeout is not None else max(self.timeout, 300.0)

    # ---- the server ----
    def health(self) -> Dict[str, Any]:
        """``GET /api/v1/health``: ``{"status": "ok", "schema_version", "meta"}``."""
        return self._call("GET", "/api/v1/health")

    def whoami(self) -> Dict[str, Any]:
        """Who this client is to the server: ``{"name", "role", "auth"}`` (``auth``: whether
        the server requires tokens)."""
        return self._call("GET", "/api/v1/whoami")

    # ---- experiments ----
    def create_experiment(self, name: str, description: str = "") -> Dict[str, Any]:
        """Creates an experiment (409 ALREADY_EXISTS when the name is taken)."""
        return self._call("POST", "/api/v1/experiments",
                          {"name": name, "description": description})

    def get_experiment(self, experiment: Union[int, str]) -> Dict[str, Any]:
        """An experiment by id (an int) or by name (a str)."""
        if isinstance(experiment, int):
            return self._call("GET", f"/api/v1/experiments/{int(experiment)}")
        found = self._call("GET", "/api/v1/experiments", query={"name": experiment})
        return found["experiments"][0]

    def list_experiments(self, max_results: Optional[int] = None) -> List[Dict[str, Any]]:
        """Every experiment (or the first ``max_results``)."""
        return self._pages("/api/v1/experiments", "experiments", max_results=max_results)

    # ---- runs ----
    def start_run(self, experiment: Union[str, int, None] = None, name: Optional[str] = None,
                  params: Optional[Mapping[str, Any]] = None,
                  tags: Optional[Mapping[str, Any]] = None, *,
                  flush_interval: float = 2.0,
                  heartbeat_interval: Optional[float] = 60.0) -> Run:
        """Starts a run (status RUNNING) and returns it; use it in a ``with`` block.

        Args:
            experiment: the experiment's name (made when missing) or id; default
                ``$DLSYS_EXPERIMENT``, else ``"default"``.
            name: the run's name.
            params: params recorded with the run (written once).
            tags: tags recorded with the run.
            flush_interval: buffered metric points are sent once the oldest is this old.
            heartbeat_interval: seconds between heartbeats sent by a background thread while
                the run is open, so that the server does not end a quiet run as FAILED (its
                ``--run-timeout-s``, 300 s by default); None: no heartbeats.
        """
        if experiment is None:
            experiment = os.environ.get("DLSYS_EXPERIMENT", "default")
        from .tracking import _param_value

        body: Dict[str, Any] = {"name": name or ""}
        if isinstance(experiment, int):
            body["experiment_id"] = experiment
        else:
            body["experiment"] = str(experiment)
        if params:
            body["params"] = {str(k): _param_value(v) for k, v in params.items()}
        if tags:
            body["tags"] = {str(k): _param_value(v) for k, v in tags.items()}
        data = self._call("POST", "/api/v1/runs", body)
        return Run(self, data, flush_interval=flush_interval,
                   heartbeat_interval=heartbeat_interval)

    def _get_run_data(self, run_id: int) -> Dict[str, Any]:
        return self._call("GET", f"/api/v1/runs/{int(run_id)}")

    def get_run(self, run_id: int) -> Run:
        """A run by id (to read it, or to log more into it)."""
        return Run(self, self._get_run_data(run_id))

    def _set_run_status(self, run_id: int, status: str) -> Dict[str, Any]:
        return self._call("PATCH", f"/api/v1/runs/{int(run_id)}", {"status": status})

    def set_run_status(self, run_id: int, status: str) -> Run:
        """Sets a run's status: RUNNING, FINISHED, FAILED or KILLED."""
        return Run(self, self._set_run_status(run_id, status.upper()))

    def _log_batch(self, run_id: int, metrics: Optional[List[Dict[str, Any]]] = None,
                   params: Optional[Dict[str, Any]] = None,
                   tags: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        body: Dict[str, Any] = {}
        if metrics:
            body["metrics"] = metrics
        if params:
            body["params"] = params
        if tags:
            body["tags"] = tags
        return self._call("POST", f"/api/v1/runs/{int(run_id)}/log-batch", body)

    def log_batch(self, run_id: int, metrics: Sequence[Union[Metric, Mapping[str, Any]]] = (),
                  params: Optional[Mapping[str, Any]] = None,
                  tags: Optional[Mapping[str, Any]] = None) -> None:
        """Logs metric points, params and tags into a run at once (split into requests of
        at most 1,000 points, 100 params and 100 tags). A point is a :class:`Metric` or a dict
        ``{"key", "value", "step"?, "timestamp"?}``."""
        run = Run(self, {"id": run_id}, heartbeat_interval=None)
        for m in metrics:
            if isinstance(m, Metric):
                run.log_metric(m.key, m.value, m.step, m.timestamp)
            else:
                run.log_metric(m["key"], m["value"], m.get("step"), m.get("timestamp"))
        run.flush()
        if params:
            run.log_params(params)
        if tags:
            run.set_tags(tags)

    def search_runs(self, experiment_ids: Optional[Sequence[Union[int, str]]] = None,
                    filter: Optional[str] = None, order_by: Union[str, Sequence[str], None] = None,
                    max_results: Optional[int] = 1000, as_frame: bool = False,
                    page_size: int = 1000):
        """Runs matching a filter, paging through the server's pages.

        Args:
            experiment_ids: experiment ids, or names (looked up); default all experiments.
            filter: e.g. ``"metrics.acc > 0.9 and params.lr = '0.1'"`` (docs/api.md,
                "Searching runs").
            order_by: one field and ASC/DESC, e.g. ``"metrics.acc DESC"`` (default
                ``start_time DESC``).
            max_results: the most runs returned (None: every match).
            as_frame: a pandas DataFrame (columns ``run_id``, ``name``, ``status``,
                ``start_time``, ``end_time``, ``params.K``, ``metrics.K``, ``tags.K``) instead
                of a list of :class:`Run`.
            page_size: runs per request (1..1000).
        """
        if not 1 <= int(page_size) <= 1000:
            raise ValueError(f"page_size {page_size}: use 1..1000")
        if isinstance(order_by, (list, tuple)):
            if len(order_by) > 1:
                raise ValueError("order_by: the server sorts by one field; give one, "
                                 "e.g. 'metrics.acc DESC'")
            order_by = order_by[0] if order_by else None
        body: Dict[str, Any] = {}
        if experiment_ids:
            ids = []
            for e in experiment_ids:
                if isinstance(e, str) and not e.isdigit():
                    ids.append(int(self.get_experiment(e)["id"]))
                else:
                    ids.append(int(e))
            body["experiment_ids"] = ids
        if filter:
            body["filter"] = filter
        if order_by:
            body["order_by"] = order_by
        runs: List[Dict[str, Any]] = []
        token = None
        while max_results is None or len(runs) < max_results:
            size = int(page_size) if max_results is None else max(
                1, min(int(page_size), max_results - len(runs)))
            query = {"page_size": size}
            if token:
                body["page_token"] = token
            page = self._call("POST", "/api/v1/runs/search", body, query=query)
            runs.extend(page.get("runs", []))
            token = page.get("next_page_token")
            if not token:
                break
        if max_results is not None:
            runs = runs[:max_results]
        if as_frame:
            return runs_frame(runs)
        return [Run(self, r) for r in runs]

    def get_metric_history(self, run_id: int, key: str, max_points: Optional[int] = None,
                           as_frame: bool = False):
        """The points of metric ``key`` of a run, in step order.

        ``max_points`` (default: 100,000, the server's most): a longer series comes
        downsampled: each of ``max_points / 3`` step buckets gives its min, max and last point
        (``.downsampled`` is then True; ``.total_points`` is the real length). Returns a
        :class:`MetricHistory` (a list of :class:`Metric`), or a pandas DataFrame with
        ``as_frame=True``.
        """
        mp = 100000 if max_points is None else int(max_points)
        h = self._call("GET", f"/api/v1/runs/{int(run_id)}/metrics/{quote_path(key)}",
                       query={"max_points": mp})
        out = MetricHistory(Metric(h.get("key", key), p["value"], p["step"], p["timestamp"])
                            for p in h.get("points", []))
        out.total_points = h.get("total_points", len(out))
        out.downsampled = bool(h.get("downsampled", False))
        return out.to_frame() if as_frame else out

    # ---- artifacts ----
    def _put_artifact(self, run_id: int, path: str, body, timeout=None) -> Dict[str, Any]:
        return self._transport.request(
            "PUT", f"/api/v1/runs/{int(run_id)}/artifacts/{quote_path(path)}", body=body,
            headers={"Content-Type": "application/octet-stream"},
            timeout=self._long_timeout(timeout)).json()

    def log_artifact(self, run_id: int, local_path: PathLike,
                     artifact_path: Optional[str] = None) -> List[Dict[str, Any]]:
        """Uploads a file, or every file under a directory, as artifacts of run ``run_id``
        (streamed from disk). See :meth:`Run.log_artifact`."""
        local_path = os.fspath(local_path)
        prefix = (artifact_path.strip("/") + "/") if artifact_path else ""
        if os.path.isdir(local_path):
            base = os.path.basename(os.path.normpath(local_path))
            files = [(os.path.join(local_path, rel), (prefix or base + "/") + rel.replace(os.sep, "/"))
                     for rel in walk_files(local_path)]
        elif os.path.isfile(local_path):
            files = [(local_path, prefix + os.path.basename(local_path))]
        else:
            raise FileNotFoundError(f"no file or directory {local_path!r} to log as an artifact")
        out = []
        for src, dst in files:
            with open(src, "rb") as f:
                out.append(self._put_artifact(run_id, dst, f))
        return out

    def list_artifacts(self, run_id: int, prefix: Optional[str] = None) -> List[Dict[str, Any]]:
        """The artifacts of a run (``path``, ``sha256``, ``size``, ``created_at``)."""
        q = {"prefix": prefix} if prefix else None
        return self._call("GET", f"/api/v1/runs/{int(run_id)}/artifacts", query=q)["artifacts"]

    def _download(self, path: str, dst: str, query=None, timeout=None) -> Dict[str, str]:
        """Streams a GET answer into the file ``dst`` (through a temporary name), checks its
        X-Content-SHA256 when there is one, and returns the answer's headers."""
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        h = hashlib.sha256()
        tmp = dst + ".part"
        try:
            with self._transport.stream("GET", path, query=query,
                                        timeout=self._long_timeout(timeout)) as r:
                with open(tmp, "wb") as f:
                    while True:
                        chunk = r.read(1 << 20)
                        if not chunk:
                            break
                        h.update(chunk)
                        f.write(chunk)
                headers = {k.lower(): v for k, v in r.getheaders()}
            want = headers.get("x-content-sha256")
            if want and want != h.hexdigest():
                raise DlsysError(f"the download of {path} has SHA-256 {h.hexdigest()}, the server "
                                 f"said {want}: the transfer was damaged; try again",
                                 code="BAD_RESPONSE", method="GET", path=path)
            os.replace(tmp, dst)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return headers

    def download_artifact(self, run_id: int, path: str,
                          dst_path: Optional[PathLike] = None) -> str:
        """Downloads artifact ``path`` of a run (checked against its SHA-256) and returns the
        local file. ``dst_path`` is a directory (default: a new temporary one) where the file
        keeps its artifact path. A ``path`` that names a directory of artifacts downloads every
        artifact under it and returns the local directory."""
        dst = os.fspath(dst_path) if dst_path is not None else tempfile.mkdtemp(prefix="dlsys-")
        path = path.strip("/")
        arts = self.list_artifacts(run_id, prefix=path)
        exact = [a for a in arts if a["path"] == path]
        if not exact:
            under = [a for a in arts if a["path"].startswith(path + "/")]
            if not under:
                raise DlsysError(f"run {run_id} has no artifact '{path}' (list them with "
                                 "list_artifacts)", status=404, code="NOT_FOUND")
            for a in under:
                self._download(f"/api/v1/runs/{int(run_id)}/artifacts/{quote_path(a['path'])}",
                               os.path.join(dst, *a["path"].split("/")))
            return os.path.join(dst, *path.split("/"))
        local = os.path.join(dst, *path.split("/"))
        self._download(f"/api/v1/runs/{int(run_id)}/artifacts/{quote_path(path)}", local)
        return local

    # ---- datasets ----
    def list_datasets(self) -> List[Dict[str, Any]]:
        """Every dataset: ``{"name", "latest": {version, label, id, rows, ...}}``."""
        return self._call("GET", "/api/v1/datasets")["datasets"]

    def list_dataset_versions(self, name: str) -> List[Dict[str, Any]]:
        """The versions of a dataset, oldest first (``version``, ``label``, ``id``, ``rows``,
        ``tags``, ``message``, ``author``, ``created_ms``)."""
        return self._call("GET", f"/api/v1/datasets/{quote_segment(name)}/versions")["versions"]

    def get_dataset_version(self, name: str, version: Union[str, int] = "latest"
                            ) -> Dict[str, Any]:
        """One version (``3``, ``"v3"``, ``"latest"``, a tag or an id prefix) with its
        ``manifest``: schema, shards, split, per-column statistics, source."""
        return self._call("GET", f"/api/v1/datasets/{quote_segment(name)}/versions/"
                                 f"{quote_segment(version)}")

    def tag_dataset_version(self, name: str, tag: str, version: Union[str, int]) -> Dict:
        """Points tag ``tag`` of a dataset at a version."""
        return self._call("PUT", f"/api/v1/datasets/{quote_segment(name)}/tags/"
                                 f"{quote_segment(tag)}", {"version": str(version)})

    def diff_dataset_versions(self, name: str, from_version: Union[str, int],
                              to_version: Union[str, int] = "latest",
                              psi: Optional[float] = None, ks: Optional[float] = None) -> Dict:
        """Rows added and removed, schema changes and per-column drift between two versions."""
        return self._call("GET", f"/api/v1/datasets/{quote_segment(name)}/diff",
                          query={"from": from_version, "to": to_version, "psi": psi, "ks": ks})

    def push_dataset(self, name: str, data: Any, *, labels: Any = None,
                     format: Optional[str] = None, message: Optional[str] = None,
                     split: Union[str, Sequence[float], None] = None,
                     split_key: Optional[str] = None, policy: Optional[str] = None,
                     schema: Optional[PathLike] = None, header: Optional[bool] = None,
                     skip_rows: Optional[int] = None, shard_rows: Optional[int] = None,
                     image_size: Optional[Tuple[int, int]] = None,
                     channels: Optional[int] = None, filename: Optional[str] = None,
                     timeout: Optional[float] = None) -> Dict[str, Any]:
        """Pushes data as a new version of dataset ``name`` and returns what the push did
        (``version``, ``label``, ``rows``, ``unchanged``, ``split``, ``bad_rows``, ...).

        ``data`` is one of:

        * a path: a CSV, TSV or JSONL file (sent as one streamed request), an NPY or IDX file
          (with ``labels=`` another one), or a folder of images in class folders (a staged
          upload, one request per file);
        * a NumPy array ``[N, ...]`` (``labels=`` an array ``[N]``): stored as column ``x``
          (a scalar column for ``[N]``, else a tensor column: uint8 stays uint8, other types
          become float32) and ``label``;
        * a pandas DataFrame, a list of row dicts, or a dict of column -> values: sent as JSON
          lines, so each column keeps its type (int64, float64, string; NaN/None are nulls;
          a cell holding a list or array makes a tensor column).

        The same data as the latest version makes no new version (``unchanged`` is True).
        Options are the server's (docs/api.md, "Datasets"): ``split`` (``(0.8, 0.1, 0.1)``),
        ``split_key``, ``policy`` (``reject`` or ``quarantine``), ``schema`` (a schema file),
        ``header`` (CSV), ``skip_rows``, ``shard_rows``, ``image_size`` (height, width),
        ``channels``, ``message``.
        """
        opts: Dict[str, Any] = {
            "message": message, "split": _split_text(split), "split_key": split_key,
            "policy": policy, "skip_rows": skip_rows, "shard_rows": shard_rows,
            "channels": channels,
            "header": None if header is None else ("yes" if header else "no"),
            "image_size": None if image_size is None else "%dx%d" % tuple(image_size),
        }
        timeout = self._long_timeout(timeout)
        with tempfile.TemporaryDirectory(prefix="dlsys-push-") as tmp:
            if isinstance(data, (str, os.PathLike)):
                path = os.fspath(data)
                if not os.path.exists(path):
                    raise FileNotFoundError(f"no file or folder {path!r} to push")
                fmt = format or _file_format(path)
                label_path = os.fspath(labels) if labels is not None else None
                fname = filename or os.path.basename(os.path.normpath(path))
            elif _optional.is_ndarray(data):
                np = _optional.numpy()
                path = os.path.join(tmp, "input.npy")
                np.save(path, _npy_ready(np, data))
                label_path = None
                if labels is not None:
                    label_path = os.path.join(tmp, "labels.npy")
                    np.save(label_path, _npy_ready(np, np.asarray(labels)))
                fmt, fname = "npy", filename or "(NumPy array)"
            else:
                if labels is not None:
                    raise ValueError("labels= goes with an array or an NPY/IDX file; a table "
                                     "holds its label as a column")
                path = os.path.join(tmp, "rows.jsonl")
                with open(path, "wb") as f:
                    if _optional.is_dataframe(data):
                        _datasets.write_jsonl_frame(data, f)
                        default_name = "(pandas DataFrame)"
                    elif isinstance(data, Mapping):
                        _datasets.write_jsonl_columns(data, f)
                        default_name = "(columns)"
                    elif isinstance(data, (list, tuple)):
                        _datasets.write_jsonl_rows(data, f)
                        default_name = "(rows)"
                    else:
                        raise TypeError(
                            f"cannot push a {type(data).__name__}: give a file path, a NumPy "
                            "array, a pandas DataFrame, a list of row dicts or a dict of columns")
                fmt, label_path, fname = "jsonl", None, filename or default_name
            if fmt in _BODY_FORMATS and label_path is None and schema is None:
                q = dict(opts, format=fmt, filename=fname)
                with open(path, "rb") as f:
                    return self._transport.request(
                        "POST", f"/api/v1/datasets/{quote_segment(name)}/versions", query=q,
                        body=f, headers={"Content-Type": "application/octet-stream"},
                        timeout=timeout).json()
            return self._push_staged(name, path, fmt, label_path,
                                     os.fspath(schema) if schema is not None else None,
                                     fname, opts, timeout)

    def _push_staged(self, name, path, fmt, labels, schema, fname, opts, timeout):
        base = f"/api/v1/datasets/{quote_segment(name)}"
        up = self._call("POST", f"{base}/uploads")["upload"]
        ingested = False
        try:
            ext = {"npy": ".npy", "idx": ".idx", "csv": ".csv", "tsv": ".tsv",
                   "jsonl": ".jsonl"}.get(fmt, "")
            files: List[Tuple[str, str]] = []
            if fmt == "images":
                rel_input = "input"
                files += [(os.path.join(path, rel), "input/" + rel.replace(os.sep, "/"))
                          for rel in walk_files(path)]
            else:
                rel_input = "input" + ext
                files.append((path, rel_input))
            q: Dict[str, Any] = dict(opts, upload=up, format=fmt, path=rel_input, filename=fname)
            if labels is not None:
                rel = "labels" + ext
                files.append((labels, rel))
                q["labels"] = rel
                q["labels_filename"] = os.path.basename(labels)
            if schema is not None:
                files.append((schema, "schema.yaml"))
                q["schema"] = "schema.yaml"
                q["schema_filename"] = os.path.basename(schema)
            for src, rel in files:
                with open(src, "rb") as f:
                    self._transport.request(
                        "PUT", f"{base}/uploads/{quote_segment(up)}/files/{quote_path(rel)}",
                        body=f, headers={"Content-Type": "application/octet-stream"},
                        timeout=timeout)
            ingested = True  # the ingest removes the upload whatever happens
            return self._transport.request("POST", f"{base}/versions", query=q,
                                           timeout=timeout).json()
        finally:
            if not ingested:
                try:
                    self._transport.request("DELETE", f"{base}/uploads/{quote_segment(up)}",
                                            timeout=10)
                except DlsysError:
                    pass  # the server removes uploads untouched for an hour

    def load_dataset(self, name: str, version: Union[str, int] = "latest",
                     split: Optional[str] = None, format: str = "numpy",
                     columns: Optional[Sequence[str]] = None, timeout: Optional[float] = None):
        """Loads the rows of a dataset version (or of one split of it).

        Args:
            version: ``3``, ``"v3"``, ``"latest"``, a tag or an id prefix.
            split: ``"train"``, ``"validation"`` or ``"test"``; default every row.
            format: ``"numpy"`` (a dict of column -> array: int64, float64, object for
                strings, and ``[rows, *shape]`` uint8/float32 for tensor columns; an int64
                column with nulls comes as float64 with NaN), ``"pandas"`` (a DataFrame;
                nullable ``Int64`` for an int column with nulls, one array per cell for a
                tensor column) or ``"lists"`` (a dict of column -> list, None for a null; no
                NumPy needed).
            columns: keep only these columns.

        Rows come in the version's order. The version is resolved once (to its id), so a push
        meanwhile does not mix two versions.
        """
        if format not in ("numpy", "pandas", "lists"):
            raise ValueError(f"format {format!r}: use 'numpy', 'pandas' or 'lists'")
        if format == "numpy":
            _optional.need_numpy("load_dataset(format='numpy')")
        elif format == "pandas":
            _optional.need_pandas("load_dataset(format='pandas')")
        v = self.get_dataset_version(name, version)
        schema = v["manifest"]["schema"]
        path = (f"/api/v1/datasets/{quote_segment(name)}/versions/{quote_segment(v['id'])}"
                "/rows")
        with self._transport.stream("GET", path, query={"split": split},
                                    timeout=self._long_timeout(timeout)) as r:
            try:
                cols = _datasets.parse_rows(io.TextIOWrapper(r, encoding="utf-8", newline=""),
                                            schema)
            except ValueError as e:  # a malformed export (UnicodeDecodeError is one)
                raise DlsysError(f"the rows of {name}@{version} could not be read: {e}",
                                 code="BAD_RESPONSE", method="GET", path=path) from None
        if columns is not None:
            missing = [c for c in columns if c not in cols]
            if missing:
                raise KeyError(f"{name}@{version} has no column(s) {missing}; it has "
                               f"{list(cols)}")
            cols = {c: cols[c] for c in columns}
        if format == "lists":
            return cols
        if format == "pandas":
            return _datasets.to_pandas(cols, schema)
        return _datasets.to_numpy(cols, schema)

    # ---- models ----
    def create_model(self, name: str, description: str = "") -> Dict[str, Any]:
        """Creates a registered model (409 ALREADY_EXISTS when it exists)."""
        return self._call("POST", "/api/v1/models", {"name": name, "description": description})

    def _ensure_model(self, name: str) -> None:
        try:
            self._call("GET", f"/api/v1/models/{quote_segment(name)}")
        except DlsysError as e:
            if e.status != 404:
                raise
            try:
                self.create_model(name)
            except DlsysError as e2:
                if e2.status != 409:  # made meanwhile by someone else
                    raise

    def get_model(self, name: str) -> Dict[str, Any]:
        """A registered model with its aliases, latest version and version count."""
        return self._call("GET", f"/api/v1/models/{quote_segment(name)}")

    def list_models(self, name_like: Optional[str] = None, order_by: Optional[str] = None,
                    max_results: Optional[int] = None) -> List[Dict[str, Any]]:
        """Registered models (``name_like`` a SQL LIKE pattern such as ``"dig%"``)."""
        return self._pages("/api/v1/models", "models",
                           {"name_like": name_like, "order_by": order_by}, max_results)

    def list_model_versions(self, name: str) -> List[Dict[str, Any]]:
        """The versions of a model, with their aliases."""
        return self._call("GET", f"/api/v1/models/{quote_segment(name)}/versions")["versions"]

    def get_model_version(self, name: str, version: Union[int, str]) -> Dict[str, Any]:
        """A model version by number, or by alias (a str that is not a number)."""
        if isinstance(version, str) and not version.isdigit():
            return self.get_alias(name, version)
        return self._call("GET", f"/api/v1/models/{quote_segment(name)}/versions/{int(version)}")

    def register_model(self, name: str, run_id: int, artifact_path: str = "model.onnx",
                       description: str = "", alias: Optional[str] = None) -> Dict[str, Any]:
        """Registers the ONNX artifact ``artifact_path`` of run ``run_id`` as a new version of
        model ``name`` (made when missing); with ``alias``, points it at the new version."""
        self._ensure_model(name)
        v = self._call("POST", f"/api/v1/models/{quote_segment(name)}/versions",
                       {"run_id": int(run_id), "artifact_path": artifact_path,
                        "description": description})
        if alias:
            self.set_alias(name, alias, v["version"])
            v = self.get_model_version(name, v["version"])
        return v

    def upload_model(self, name: str, path: PathLike, description: str = "",
                     artifact_path: Optional[str] = None, alias: Optional[str] = None,
                     timeout: Optional[float] = None) -> Dict[str, Any]:
        """Uploads an ONNX file as a new version of model ``name`` (made when missing); the
        server checks that it loads first. With ``alias``, points it at the new version."""
        path = os.fspath(path)
        self._ensure_model(name)
        with open(path, "rb") as f:
            v = self._transport.request(
                "POST", f"/api/v1/models/{quote_segment(name)}/versions/upload",
                query={"artifact_path": artifact_path or os.path.basename(path),
                       "description": description or None},
                body=f, headers={"Content-Type": "application/octet-stream"},
                timeout=self._long_timeout(timeout)).json()
        if alias:
            self.set_alias(name, alias, v["version"])
            v = self.get_model_version(name, v["version"])
        return v

    def set_model_version_status(self, name: str, version: int, status: str) -> Dict[str, Any]:
        """Sets a version's status: READY or ARCHIVED."""
        return self._call("PATCH", f"/api/v1/models/{quote_segment(name)}/versions/"
                                   f"{int(version)}", {"status": status.upper()})

    def download_model(self, name: str, version: Union[int, str] = "latest",
                       dst_path: Optional[PathLike] = None) -> str:
        """Downloads a version's ONNX file (by number or alias) and returns its local path
        (``dst_path``: a file, or a directory; default a new temporary directory)."""
        dst = os.fspath(dst_path) if dst_path is not None else tempfile.mkdtemp(prefix="dlsys-")
        if os.path.isdir(dst):
            dst = os.path.join(dst, f"{name}-{version}.onnx")
        self._download(f"/api/v1/models/{quote_segment(name)}/versions/"
                       f"{quote_segment(version)}/artifact", dst)
        return dst

    def set_alias(self, name: str, alias: str, version: int) -> Dict[str, Any]:
        """Points alias ``alias`` of a model at ``version`` (atomic: promote and roll back are
        this one move). Returns ``{"model", "alias", "version", "previous_version"}``."""
        return self._call("PUT", f"/api/v1/models/{quote_segment(name)}/aliases/"
                                 f"{quote_segment(alias)}", {"version": int(version)})

    def get_alias(self, name: str, alias: str) -> Dict[str, Any]:
        """The version an alias points at (``latest``: the newest version)."""
        return self._call("GET", f"/api/v1/models/{quote_segment(name)}/aliases/"
                                 f"{quote_segment(alias)}")

    def delete_alias(self, name: str, alias: str) -> None:
        """Removes an alias."""
        self._call("DELETE", f"/api/v1/models/{quote_segment(name)}/aliases/"
                             f"{quote_segment(alias)}")

    # ---- deployments ----
    def list_deployments(self) -> List[Dict[str, Any]]:
        """Every deployment with its ``status`` (state, version, config, counters)."""
        return self._call("GET", "/api/v1/deployments")["deployments"]

    def get_deployment(self, name: str) -> Dict[str, Any]:
        """A deployment with its ``status``."""
        return self._call("GET", f"/api/v1/deployments/{quote_segment(name)}")

    def create_deployment(self, name: str, model: str, ref: Union[str, int, None] = None,
                          config: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None, **config_kw: Any) -> Dict[str, Any]:
        """Serves a registered model; answers once its version is loaded and warmed.

        ``model`` is ``"digits"`` (with ``ref``: an alias, default ``production``, or a
        version number) or ``"digits@production"`` / ``"digits@3"``. ``config`` (and keyword
        arguments) are the deployment's settings: ``max_batch``, ``max_delay_us``,
        ``instances``, ``threads``, ``timeout_ms``, ``cache_mb``, ``canary``, ``shadow``,
        ``sample_rate``, ... (docs/serving.md).
        """
        mname, mref = _model_ref(model, ref)
        body: Dict[str, Any] = {"name": name, "model": mname,
                                "config": dict(config or {}, **config_kw)}
        if mref is not None:
            body["ref"] = mref
        return self._call("POST", "/api/v1/deployments", body,
                          timeout=self._long_timeout(timeout))

    def update_deployment(self, name: str, model: Optional[str] = None,
                          ref: Union[str, int, None] = None,
                          config: Optional[Mapping[str, Any]] = None, *,
                          timeout: Optional[float] = None, **config_kw: Any) -> Dict[str, Any]:
        """Changes a deployment: what it serves (``model``/``ref``) and its settings, merged
        into the current ones (a setting given as None is removed). A canary:
        ``canary={"model": "digits", "version": 3, "weight": 10}``. The new version loads
        beside the old before the switch."""
        cur = self.get_deployment(name)
        if model is not None:
            mname, mref = _model_ref(model, ref)
        else:
            mname, mref = cur["model"], (str(ref) if ref is not None else None)
        if mref is None:
            mref = cur.get("ref") if model is None or mname == cur["model"] else None
        merged = dict(cur.get("config") or {})
        for k, v in dict(config or {}, **config_kw).items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        body: Dict[str, Any] = {"model": mname, "config": merged}
        if mref is not None:
            body["ref"] = str(mref)
        return self._call("PUT", f"/api/v1/deployments/{quote_segment(name)}", body,
                          timeout=self._long_timeout(timeout))

    def promote_deployment(self, name: str) -> Dict[str, Any]:
        """Makes a deployment's canary its primary (400 when it has no canary)."""
        return self._call("POST", f"/api/v1/deployments/{quote_segment(name)}/promote")

    def rollback_deployment(self, name: str) -> Dict[str, Any]:
        """Drops a deployment's canary (400 when it has none)."""
        return self._call("POST", f"/api/v1/deployments/{quote_segment(name)}/rollback")

    def delete_deployment(self, name: str) -> None:
        """Stops serving a deployment (queued requests finish first)."""
        self._call("DELETE", f"/api/v1/deployments/{quote_segment(name)}")

    def model_metadata(self, deployment: str, version: Optional[int] = None) -> Dict[str, Any]:
        """``GET /v2/models/{name}``: inputs, outputs (``-1`` the batch dimension) and
        parameters (task, class names, features) of what a deployment serves."""
        path = f"/v2/models/{quote_segment(deployment)}"
        if version is not None:
            path += f"/versions/{int(version)}"
        return self._call("GET", path)

    def _input_types(self, deployment: str, version: Optional[int]) -> Dict[str, str]:
        key = (deployment, version)
        hit = self._model_meta.get(key)
        if hit is None or time.monotonic() - hit[0] > 30:
            meta = self.model_metadata(deployment, version)
            hit = (time.monotonic(), meta)
            self._model_meta[key] = hit
        return {i["name"]: i["datatype"] for i in hit[1].get("inputs", [])}

    def infer(self, deployment: str, inputs: Any, outputs: Optional[Sequence[str]] = None, *,
              version: Optional[int] = None, request_key: Optional[str] = None,
              parameters: Optional[Mapping[str, Any]] = None, binary: bool = False,
              request_id: Optional[str] = None, as_numpy: Optional[bool] = None,
              timeout: Optional[float] = None) -> "_v2.InferResult":
        """Runs a deployment on ``inputs`` over the Open Inference Protocol (KServe v2).

        Args:
            inputs: a dict of input name -> NumPy array or nested lists; or one array for a
                model with a single input. Each is converted to the datatype the model
                declares (a float64 array to FP32, ...). For a model trained by dlsys, one
                input per feature column (numbers, or strings for a category) also works.
            outputs: output names to return, including the derived ``probabilities``,
                ``class`` and ``class_id`` of a classifier; default the model's outputs.
            version: a version to call (``/versions/{v}/infer``), else the deployment's
                choice (its canary split included).
            request_key: ``X-Request-Key``: keeps a caller on one side of a canary split.
            parameters: protocol parameters, e.g. ``{"priority": 0, "timeout": 50000}``.
            binary: send and receive tensors as raw bytes (the binary extension): faster for
                large inputs.
            as_numpy: outputs as NumPy arrays (default when NumPy is installed), else nested
                lists.

        Returns an :class:`InferResult`: a dict of output name -> array, with
        ``model_version`` (the version that answered) and ``id``.
        """
        types = self._input_types(deployment, version)
        if not isinstance(inputs, Mapping):
            if len(types) != 1:
                raise ValueError(f"deployment {deployment!r} takes inputs {sorted(types)}: pass a "
                                 "dict of input name -> array")
            inputs = {next(iter(types)): inputs}
        body, headers = _v2.encode_request(inputs, types, outputs, parameters, binary, request_id)
        if request_key:
            headers["X-Request-Key"] = request_key
        path = f"/v2/models/{quote_segment(deployment)}"
        if version is not None:
            path += f"/versions/{int(version)}"
        r = self._transport.request("POST", path + "/infer", body=body, headers=headers,
                                    timeout=timeout)
        if as_numpy is None:
            as_numpy = _optional.numpy() is not None
        return _v2.decode_response(r.body, r.headers, as_numpy)

    # ---- jobs ----
    def submit_job(self, spec: Union[Mapping[str, Any], PathLike]) -> Dict[str, Any]:
        """Queues a job (docs/jobs.md): a dict, or a JSON or YAML file (YAML needs PyYAML).
        Returns the job (state QUEUED). Relative paths in the spec are the server's."""
        if not isinstance(spec, Mapping):
            spec = _read_spec_file(os.fspath(spec))
        return self._call("POST", "/api/v1/jobs", dict(spec))

    def get_job(self, job_id: int) -> Dict[str, Any]:
        """A job: state, attempts, times, ``end_reason``, resources used."""
        return self._call("GET", f"/api/v1/jobs/{int(job_id)}")

    def list_jobs(self, state: Optional[str] = None, owner: Optional[str] = None,
                  max_results: Optional[int] = 1000) -> List[Dict[str, Any]]:
        """Jobs, newest first (``state``: queued, running, succeeded, failed, cancelled)."""
        return self._pages("/api/v1/jobs", "jobs",
                           {"state": state.lower() if state else None, "owner": owner},
                           max_results)

    def cancel_job(self, job_id: int) -> Dict[str, Any]:
        """Cancels a job (queued: at once; running: SIGTERM, then SIGKILL); 409 when it ended."""
        return self._call("POST", f"/api/v1/jobs/{int(job_id)}/cancel")

    def get_job_log(self, job_id: int, offset: int = 0,
                    max_bytes: Optional[int] = None) -> Dict[str, Any]:
        """A piece of a job's log from byte ``offset``: ``{"id", "state", "offset" (where the
        next piece starts), "size", "text"}``."""
        return self._call("GET", f"/api/v1/jobs/{int(job_id)}/log",
                          query={"offset": int(offset), "max_bytes": max_bytes})

    def stream_job_log(self, job_id: int, timeout: Optional[float] = 600, offset: int = 0,
                       poll_interval: float = 0.5) -> Iterator[str]:
        """Yields a job's log text as it is written, until the job has ended and its whole
        log was read. Raises :class:`DlsysTimeout` when ``timeout`` seconds pass first (the
        job goes on; None: no deadline)::

            for text in client.stream_job_log(job["id"]):
                print(text, end="")
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = min(0.05, poll_interval)
        while True:
            piece = self.get_job_log(job_id, offset)
            offset = piece.get("offset", offset)
            if piece.get("text"):
                yield piece["text"]
                wait = min(0.05, poll_interval)
                if offset < piece.get("size", 0):
                    continue  # more is there already
            if piece.get("state") in _JOB_DONE and offset >= piece.get("size", 0):
                # the log is complete once the job has ended: one more read catches the end
                last = self.get_job_log(job_id, offset)
                if last.get("text"):
                    offset = last.get("offset", offset)
                    yield last["text"]
                    continue
                return
            if deadline is not None and time.monotonic() + wait > deadline:
                raise DlsysTimeout(
                    f"job {job_id} is still {piece.get('state')} after {timeout:g} s; it goes on: "
                    "read its log again (offset=%d), or cancel it" % offset,
                    code="DEADLINE_EXCEEDED")
            time.sleep(wait)
            wait = min(wait * 2, poll_interval)

    def wait_job(self, job_id: int, timeout: Optional[float] = 600,
                 poll_interval: float = 0.5) -> Dict[str, Any]:
        """Waits until a job ends (SUCCEEDED, FAILED or CANCELLED) and returns it; raises
        :class:`DlsysTimeout` after ``timeout`` seconds (the job goes on)."""
        return self._wait(lambda: self.get_job(job_id), "state", _JOB_DONE, timeout,
                          poll_interval, f"job {job_id}")

    def _wait(self, get, field, done, timeout, poll_interval, what):
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = min(0.05, poll_interval)
        while True:
            obj = get()
            if obj.get(field) in done:
                return obj
            if deadline is not None and time.monotonic() + wait > deadline:
                raise DlsysTimeout(f"{what} is still {obj.get(field)} after {timeout:g} s; it "
                                   "goes on: wait again, or cancel it", code="DEADLINE_EXCEEDED")
            time.sleep(wait)
            wait = min(wait * 2, poll_interval)

    # ---- pipelines ----
    def create_pipeline(self, spec: Union[str, PathLike], file: Optional[str] = None
                        ) -> Dict[str, Any]:
        """Stores a pipeline from its YAML text, or from a YAML file's path (docs/pipelines.md);
        a pipeline of the same name gets a new version. ``file`` names the text in errors."""
        text = os.fspath(spec)
        if "\n" not in text and os.path.isfile(text):
            file = file or os.path.basename(text)
            with open(text, encoding="utf-8") as f:
                text = f.read()
        return self._call("POST", "/api/v1/pipelines", {"spec": text, "file": file or "spec.yaml"})

    def get_pipeline(self, name: str) -> Dict[str, Any]:
        """A pipeline: its spec, params, steps in run order, triggers."""
        return self._call("GET", f"/api/v1/pipelines/{quote_segment(name)}")

    def list_pipelines(self) -> List[Dict[str, Any]]:
        """Every pipeline, each with its ``last_run``."""
        return self._call("GET", "/api/v1/pipelines")["pipelines"]

    def start_pipeline_run(self, name: str, params: Optional[Mapping[str, Any]] = None,
                           no_cache: bool = False, event_id: Optional[str] = None
                           ) -> Dict[str, Any]:
        """Starts a run of a pipeline (``params`` override its defaults). With an
        ``event_id`` already started for this pipeline, returns that run (``created``
        False)."""
        body: Dict[str, Any] = {"params": dict(params or {}), "no_cache": bool(no_cache)}
        if event_id:
            body["event_id"] = event_id
        return self._call("POST", f"/api/v1/pipelines/{quote_segment(name)}/runs", body)

    def get_pipeline_run(self, run_id: int, pipeline: str = "-") -> Dict[str, Any]:
        """A pipeline run with its steps (state, outputs, cached, timings)."""
        return self._call("GET", f"/api/v1/pipelines/{quote_segment(pipeline)}/runs/"
                                 f"{int(run_id)}")

    def list_pipeline_runs(self, pipeline: str = "-", state: Optional[str] = None,
                           max_results: Optional[int] = 1000) -> List[Dict[str, Any]]:
        """Runs of a pipeline (``"-"``: of every pipeline), newest first."""
        return self._pages(f"/api/v1/pipelines/{quote_segment(pipeline)}/runs", "runs",
                           {"state": state}, max_results)

    def get_pipeline_run_logs(self, run_id: int, pipeline: str = "-") -> Dict[str, Any]:
        """What the steps of a pipeline run printed (the last 64 KiB of each job's log)."""
        return self._call("GET", f"/api/v1/pipelines/{quote_segment(pipeline)}/runs/"
                                 f"{int(run_id)}/logs")

    def cancel_pipeline_run(self, run_id: int, pipeline: str = "-") -> Dict[str, Any]:
        """Cancels a pipeline run (its running jobs are stopped)."""
        return self._call("POST", f"/api/v1/pipelines/{quote_segment(pipeline)}/runs/"
                                  f"{int(run_id)}/cancel")

    def retry_pipeline_run(self, run_id: int, pipeline: str = "-") -> Dict[str, Any]:
        """Runs the steps of a FAILED or CANCELLED pipeline run that did not succeed again."""
        return self._call("POST", f"/api/v1/pipelines/{quote_segment(pipeline)}/runs/"
                                  f"{int(run_id)}/retry")

    def wait_pipeline_run(self, run_id: int, pipeline: str = "-",
                          timeout: Optional[float] = 600,
                          poll_interval: float = 0.5) -> Dict[str, Any]:
        """Waits until a pipeline run ends (SUCCEEDED, FAILED or CANCELLED) and returns it;
        raises :class:`DlsysTimeout` after ``timeout`` seconds (the run goes on)."""
        return self._wait(lambda: self.get_pipeline_run(run_id, pipeline), "state",
                          _PIPELINE_RUN_DONE, timeout, poll_interval, f"pipeline run {run_id}")

    # ---- lineage and tokens ----
    def get_lineage(self, kind: str, id: Union[str, int], depth: int = 10) -> Dict[str, Any]:
        """The lineage graph around a node (``dataset_version``, ``run``, ``model_version``
        ``name/version``, ``deployment``, ``pipeline_run``), upstream and downstream."""
        return self._call("GET", f"/api/v1/lineage/{quote_segment(kind)}/{quote_path(str(id))}",
                          query={"depth": depth})

    def create_token(self, name: str, role: str) -> Dict[str, Any]:
        """(admin) Makes an API token: ``{"id", "name", "role", "token"}``, the only time the
        token is shown."""
        return self._call("POST", "/api/v1/tokens", {"name": name, "role": role})

    def list_tokens(self) -> List[Dict[str, Any]]:
        """(admin) The tokens, without their secrets."""
        return self._call("GET", "/api/v1/tokens")["tokens"]

    def revoke_token(self, token_id: int) -> None:
        """(admin) Revokes a token (it stops working within 5 seconds)."""
        self._call("DELETE", f"/api/v1/tokens/{int(token_id)}")


def _npy_ready(np, arr):
    """An array the server's NPY reader takes: little-endian, C order, a supported dtype."""
    arr = np.asarray(arr)
    if arr.dtype.kind in "OUSV":
        raise TypeError(f"an array of {arr.dtype} cannot be pushed as NPY: push strings in a "
                        "DataFrame or as a dict of columns")
    if arr.dtype.kind == "u" and arr.dtype != np.uint8:
        arr = arr.astype(np.int64)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr)


def _read_spec_file(path: str) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        return json.loads(text)
    try:
        import yaml  # type: ignore
    except ImportError:
        raise ImportError(f"{path} is YAML, which needs PyYAML (apt install python3-yaml); or "
                          "pass the spec as a dict") from None
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict):
        raise ValueError(f"{path} does not hold a mapping of job fields")
    return spec


def runs_frame(runs: Sequence[Mapping[str, Any]]):
    """Runs (as the server answers them) as a DataFrame, one row per run: ``run_id``,
    ``experiment_id``, ``name``, ``status``, ``start_time``, ``end_time``, then
    ``params.K``, ``metrics.K`` (the latest value) and ``tags.K`` columns."""
    from ._optional import need_pandas

    pd = need_pandas("search_runs(as_frame=True)")
    rows = []
    for r in runs:
        row = {"run_id": r.get("id"), "experiment_id": r.get("experiment_id"),
               "name": r.get("name"), "status": r.get("status"),
               "start_time": r.get("start_time"), "end_time": r.get("end_time")}
        for k, v in (r.get("params") or {}).items():
            row["params." + k] = v
        for k, v in (r.get("metrics") or {}).items():
            row["metrics." + k] = v["value"] if isinstance(v, dict) else v
        for k, v in (r.get("tags") or {}).items():
            row["tags." + k] = v
        rows.append(row)
    fixed = ["run_id", "experiment_id", "name", "status", "start_time", "end_time"]
    extra = sorted({k for row in rows for k in row} - set(fixed),
                   key=lambda k: ({"params": 0, "metrics": 1, "tags": 2}[k.split(".", 1)[0]], k))
    return pd.DataFrame(rows, columns=fixed + extra)
