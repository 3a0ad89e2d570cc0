#!/usr/bin/python3
"""The Python client (clients/python) against a real `dlsys server`.

    DLSYS_BIN=build/dlsys /usr/bin/python3 tests/python_client/test_client.py [-v] [-k NAME]
    /usr/bin/python3 tests/python_client/test_client.py build/dlsys -v

Each test class shares one server on a free loopback port with a fresh data directory.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dlsys_testlib as lib  # noqa: E402

lib.take_binary_from_argv()

import dlsys  # noqa: E402  (clients/python, put on the path by dlsys_testlib)

try:
    import numpy as np
except ImportError:  # the tests that need it say so
    np = None
try:
    import pandas as pd
except ImportError:
    pd = None

_server = None


def setUpModule():
    global _server
    _server = lib.Server().start()


def tearDownModule():
    if _server is not None:
        _server.cleanup()


def client(**kw) -> dlsys.Client:
    return dlsys.Client(_server.url, **kw)


class CountingClient:
    """Counts the requests a client sends, by method and path."""

    def __init__(self, c: dlsys.Client):
        self.calls = []
        real = c._transport.request

        def request(method, path, *a, **kw):
            self.calls.append((method, path))
            return real(method, path, *a, **kw)

        c._transport.request = request

    def count(self, method, suffix):
        return sum(1 for m, p in self.calls if m == method and p.endswith(suffix))


class RunsTest(unittest.TestCase):
    def test_logged_metrics_params_and_tags_read_back_equal(self):
        c = client()
        values = {step: (1.0 / (step + 1), step * 0.01) for step in range(50)}
        with c.start_run(experiment="py-readback", name="r", params={"lr": 0.1, "layers": 3},
                         tags={"team": "a"}) as run:
            for step, (loss, acc) in values.items():
                run.log_metrics({"loss": loss, "acc": acc}, step=step)
            run.set_tag("stage", "final")
        got = c.get_run(run.id)
        self.assertEqual(got.status, "FINISHED")
        self.assertEqual(got.params, {"lr": "0.1", "layers": "3"})
        self.assertEqual(got.tags, {"team": "a", "stage": "final"})
        self.assertEqual(got.metrics, {"loss": values[49][0], "acc": values[49][1]})
        loss = c.get_metric_history(run.id, "loss")
        self.assertEqual([(m.step, m.value) for m in loss],
                         [(s, v[0]) for s, v in sorted(values.items())])
        self.assertEqual(loss.total_points, 50)
        self.assertFalse(loss.downsampled)
        acc = c.get_metric_history(run.id, "acc")
        self.assertEqual([m.value for m in acc], [values[s][1] for s in range(50)])

    def test_metrics_past_1000_points_go_in_batches_of_at_most_1000(self):
        c = client()
        counter = CountingClient(c)
        run = c.start_run(experiment="py-batch", flush_interval=3600, heartbeat_interval=None)
        for step in range(2500):
            run.log_metric("loss", step * 0.5, step=step)
        # 2 full batches were sent when the buffer filled; 500 points wait for the end
        self.assertEqual(counter.count("POST", "/log-batch"), 2)
        run.end()
        self.assertEqual(counter.count("POST", "/log-batch"), 3)
        h = c.get_metric_history(run.id, "loss")
        self.assertEqual(h.total_points, 2500)
        self.assertEqual([m.value for m in h], [s * 0.5 for s in range(2500)])
        # and many keys at one step: 1,200 points in two requests
        run2 = c.start_run(experiment="py-batch", flush_interval=3600, heartbeat_interval=None)
        before = counter.count("POST", "/log-batch")
        run2.log_metrics({f"m{i}": float(i) for i in range(1200)}, step=7)
        run2.end()
        self.assertEqual(counter.count("POST", "/log-batch") - before, 2)
        self.assertEqual(len(c.get_run(run2.id).metrics), 1200)
        self.assertEqual(c.get_run(run2.id).metrics["m1199"], 1199.0)

    def test_downsampled_history_keeps_the_spike(self):
        c = client()
        with c.start_run(experiment="py-downsample") as run:
            for step in range(3000):
                run.log_metric("loss", 100.0 if step == 1234 else 1.0, step=step)
        h = c.get_metric_history(run.id, "loss", max_points=30)
        self.assertTrue(h.downsampled)
        self.assertEqual(h.total_points, 3000)
        self.assertLessEqual(len(h), 30)
        self.assertIn(100.0, [m.value for m in h])

    def test_run_context_manager_ends_finished_or_failed(self):
        c = client()
        with c.start_run(experiment="py-ctx") as ok:
            ok.log_metric("x", 1.0)
        self.assertEqual(c.get_run(ok.id).status, "FINISHED")
        with self.assertRaises(ZeroDivisionError):
            with c.start_run(experiment="py-ctx") as bad:
                bad.log_metric("x", 2.0, step=1)
                1 / 0
        got = c.get_run(bad.id)
        self.assertEqual(got.status, "FAILED")
        self.assertEqual(got.metrics, {"x": 2.0})  # buffered points were sent before the end

    def test_server_errors_raise_dlsys_error_with_the_servers_message(self):
        c = client()
        run = c.start_run(experiment="py-errors", params={"lr": 0.1}, heartbeat_interval=None)
        with self.assertRaises(dlsys.DlsysError) as cm:
            run.log_param("lr", 0.2)
        e = cm.exception
        self.assertEqual(e.status, 400)
        self.assertEqual(e.code, "INVALID_ARGUMENT")
        self.assertIn("params are written once", e.message)
        self.assertIn("params are written once", str(e))
        self.assertTrue(e.request_id)
        with self.assertRaises(dlsys.DlsysError) as cm:
            c.search_runs(filter="colour = 'red'")
        self.assertEqual(cm.exception.status, 400)
        self.assertIn("unknown field 'colour'", cm.exception.message)
        with self.assertRaises(dlsys.DlsysError) as cm:
            c.get_run(987654)
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "NOT_FOUND"))
        self.assertIn("987654", cm.exception.message)
        run.end()

    def test_an_unreachable_server_is_a_dlsys_error_saying_what_to_do(self):
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        c = dlsys.Client(f"http://127.0.0.1:{port}", timeout=5)
        with self.assertRaises(dlsys.DlsysError) as cm:
            c.health()
        self.assertIsNone(cm.exception.status)
        self.assertEqual(cm.exception.code, "UNREACHABLE")
        self.assertIn("dlsys server", cm.exception.message)

    def test_a_request_that_gets_no_answer_times_out(self):
        # a socket that accepts and never answers
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        try:
            c = dlsys.Client("http://127.0.0.1:%d" % srv.getsockname()[1], timeout=0.5)
            t0 = time.monotonic()
            with self.assertRaises(dlsys.DlsysError) as cm:
                c.health()
            self.assertEqual(cm.exception.code, "TIMEOUT")
            self.assertLess(time.monotonic() - t0, 10)
        finally:
            srv.close()

    def test_busy_server_503_is_retried_with_backoff(self):
        answers = [503, 503, 200]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                status = answers.pop(0)
                body = (b'{"status":"ok"}' if status == 200 else
                        b'{"error":{"code":"UNAVAILABLE","message":"busy"}}')
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            c = dlsys.Client("http://127.0.0.1:%d" % httpd.server_address[1])
            self.assertEqual(c.health(), {"status": "ok"})
            self.assertEqual(answers, [])
            answers.extend([503, 503, 503, 503])
            with self.assertRaises(dlsys.DlsysError) as cm:
                c.health()
            self.assertEqual((cm.exception.status, cm.exception.message), (503, "busy"))
        finally:
            httpd.shutdown()
            httpd.server_close()

    def test_an_open_run_sends_heartbeats(self):
        c = client()
        run = c.start_run(experiment="py-heartbeat", heartbeat_interval=0.2)
        first = run.to_dict()["heartbeat_time"]
        deadline = time.monotonic() + 20
        while c.get_run(run.id).to_dict()["heartbeat_time"] <= first:
            self.assertLess(time.monotonic(), deadline, "no heartbeat reached the server")
            time.sleep(0.1)
        run.end()
        run._heartbeat.join(5)  # the end stops the heartbeat thread
        self.assertFalse(run._heartbeat.is_alive())

    def test_not_finite_metric_values_are_refused_before_sending(self):
        run = client().start_run(experiment="py-nan", heartbeat_interval=None)
        with self.assertRaises(ValueError):
            run.log_metric("loss", float("nan"))
        run.end()

    def test_search_runs_pages_filters_and_orders(self):
        c = client()
        for i in range(23):
            with c.start_run(experiment="py-search", name=f"r{i}",
                             params={"i": i, "parity": "even" if i % 2 == 0 else "odd"}) as r:
                r.log_metric("score", (i * 7) % 23, step=0)
        everything = c.search_runs(["py-search"], max_results=None, page_size=5)
        self.assertEqual(len(everything), 23)
        self.assertEqual(len({r.id for r in everything}), 23)  # no page repeated a run
        self.assertEqual(c.search_runs(["py-search"], max_results=10, page_size=3).__len__(), 10)
        even = c.search_runs(["py-search"], filter="params.parity = 'even'", max_results=None,
                             page_size=4)
        self.assertEqual(sorted(int(r.params["i"]) for r in even), list(range(0, 23, 2)))
        ordered = c.search_runs(["py-search"], order_by="metrics.score ASC", page_size=6,
                                max_results=None)
        self.assertEqual([r.metrics["score"] for r in ordered], list(map(float, range(23))))
        exp_id = c.get_experiment("py-search")["id"]
        self.assertEqual(len(c.search_runs([exp_id], max_results=None)), 23)

    @unittest.skipIf(pd is None, "pandas is not installed (apt install python3-pandas)")
    def test_search_runs_and_history_as_frames(self):
        c = client()
        for lr in (0.1, 0.01):
            with c.start_run(experiment="py-frame", params={"lr": lr}) as r:
                r.log_metrics({"acc": lr * 5}, step=1)
        df = c.search_runs(["py-frame"], as_frame=True, order_by="params.lr ASC")
        self.assertEqual(list(df["params.lr"]), ["0.01", "0.1"])
        self.assertEqual(list(df["metrics.acc"]), [0.05, 0.5])
        self.assertEqual(list(df["status"]), ["FINISHED", "FINISHED"])
        h = c.get_metric_history(int(df["run_id"][0]), "acc", as_frame=True)
        self.assertEqual(list(h["value"]), [0.05])
        self.assertEqual(list(h["step"]), [1])

    def test_artifacts_upload_list_and_download_equal(self):
        c = client()
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        blob = os.urandom(3 << 20) + b"end"
        with open(os.path.join(tmp, "weights.bin"), "wb") as f:
            f.write(blob)
        os.makedirs(os.path.join(tmp, "report", "sub"))
        for rel, text in (("report/a.txt", "alpha"), ("report/sub/b.json", '{"b": 1}')):
            with open(os.path.join(tmp, rel), "w") as f:
                f.write(text)
        with c.start_run(experiment="py-artifacts") as run:
            run.log_artifact(os.path.join(tmp, "weights.bin"), "model")
            run.log_artifact(os.path.join(tmp, "report"))
            run.log_dict({"k": [1, 2]}, "meta/info.json")
        paths = sorted(a["path"] for a in run.list_artifacts())
        self.assertEqual(paths, ["meta/info.json", "model/weights.bin", "report/a.txt",
                                 "report/sub/b.json"])
        dst = os.path.join(tmp, "down")
        local = run.download_artifact("model/weights.bin", dst)
        with open(local, "rb") as f:
            self.assertEqual(f.read(), blob)
        folder = c.download_artifact(run.id, "report", dst)
        with open(os.path.join(folder, "sub", "b.json")) as f:
            self.assertEqual(json.load(f), {"b": 1})
        with open(c.download_artifact(run.id, "meta/info.json", dst)) as f:
            self.assertEqual(json.load(f), {"k": [1, 2]})
        with self.assertRaises(dlsys.DlsysError) as cm:
            c.download_artifact(run.id, "nope.txt", dst)
        self.assertEqual(cm.exception.status, 404)

    def test_whoami(self):
        try:
            me = client().whoami()
        except dlsys.DlsysError as e:
            if e.status == 404:
                self.skipTest("this dlsys binary has no GET /api/v1/whoami yet")
            raise
        self.assertEqual(me["auth"], False)
        self.assertEqual(me["role"], "admin")


@unittest.skipIf(np is None, "NumPy is not installed (apt install python3-numpy)")
class DatasetsTest(unittest.TestCase):
    def test_numpy_push_and_load_back_equal(self):
        c = client()
        rng = np.random.default_rng(1)
        x = rng.normal(size=(200, 4))
        y = rng.integers(0, 3, size=200)
        pushed = c.push_dataset("py-arrays", x, labels=y, message="from numpy")
        self.assertFalse(pushed["unchanged"])
        self.assertEqual(pushed["rows"], 200)
        self.assertEqual(pushed["version"], 1)
        d = c.load_dataset("py-arrays", pushed["version"])
        self.assertEqual(sorted(d), ["label", "x"])
        self.assertEqual(d["x"].dtype, np.float32)  # a tensor column holds float32
        self.assertEqual(d["x"].shape, (200, 4))
        np.testing.assert_array_equal(d["x"], x.astype(np.float32))
        self.assertEqual(d["label"].dtype, np.int64)
        np.testing.assert_array_equal(d["label"], y)
        # the splits partition the rows, in order
        parts = {s: c.load_dataset("py-arrays", "latest", split=s)
                 for s in ("train", "validation", "test")}
        self.assertEqual(sum(len(p["label"]) for p in parts.values()), 200)
        self.assertEqual(pushed["split"], {s: len(p["label"]) for s, p in parts.items()})
        self.assertGreater(len(parts["train"]["label"]), 100)
        rows = {tuple(r) for r in x.astype(np.float32)}
        for p in parts.values():
            self.assertTrue({tuple(r) for r in p["x"]} <= rows)
        lists = c.load_dataset("py-arrays", format="lists")
        self.assertEqual(lists["x"][0], x[0].astype(np.float32).tolist())
        self.assertTrue(all(isinstance(v, float) for v in lists["x"][0]))
        # the same data again makes no version
        again = c.push_dataset("py-arrays", x, labels=y)
        self.assertTrue(again["unchanged"])
        self.assertEqual(len(c.list_dataset_versions("py-arrays")), 1)
        self.assertIn("py-arrays", [d["name"] for d in c.list_datasets()])
        version = c.get_dataset_version("py-arrays", "v1")
        self.assertEqual(version["message"], "from numpy")
        self.assertEqual(version["manifest"]["stats"]["label"]["count"], 200)

    def test_scalar_and_uint8_arrays_keep_their_types(self):
        c = client()
        v = np.linspace(-1, 1, 50)  # float64 [N]: a float64 column, exactly
        c.push_dataset("py-scalar", v)
        got = c.load_dataset("py-scalar")["x"]
        self.assertEqual(got.dtype, np.float64)
        np.testing.assert_array_equal(got, v)
        img = np.random.default_rng(2).integers(0, 256, size=(30, 5, 5), dtype=np.uint8)
        c.push_dataset("py-images", img, labels=np.arange(30) % 2)
        got = c.load_dataset("py-images")
        self.assertEqual(got["x"].dtype, np.uint8)
        np.testing.assert_array_equal(got["x"], img)
        lists = c.load_dataset("py-images", format="lists")
        self.assertEqual(lists["x"][3], img[3].tolist())
        self.assertEqual(lists["label"][:4], [0, 1, 0, 1])

    @unittest.skipIf(pd is None, "pandas is not installed (apt install python3-pandas)")
    def test_dataframe_round_trip(self):
        c = client()
        df = pd.DataFrame({
            "id": [1, 2, 3, 4],
            "score": [0.5, float("nan"), -2.25, 1e-7],
            "city": ["Paris", None, "Zürich, CH", "007"],  # "007" stays a string
            "clicks": [10, 20, 30, 40],
        })
        pushed = c.push_dataset("py-frame", df, split=(1.0, 0.0, 0.0), message="frame")
        self.assertEqual(pushed["rows"], 4)
        schema = {col["name"]: col["type"] for col in
                  c.get_dataset_version("py-frame")["manifest"]["schema"]["columns"]}
        self.assertEqual([schema[k] for k in ("id", "score", "city", "clicks")],
                         ["int64", "float64", "string", "int64"])
        back = c.load_dataset("py-frame", format="pandas")
        self.assertEqual(sorted(back.columns), sorted(df.columns))
        pd.testing.assert_frame_equal(back[list(df.columns)], df)
        train = c.load_dataset("py-frame", split="train", format="pandas")
        pd.testing.assert_frame_equal(train[list(df.columns)], df)
        self.assertEqual(len(c.load_dataset("py-frame", split="test", format="pandas")), 0)
        only = c.load_dataset("py-frame", columns=["city"], format="lists")
        self.assertEqual(only, {"city": ["Paris", None, "Zürich, CH", "007"]})

    @unittest.skipIf(pd is None, "pandas is not installed (apt install python3-pandas)")
    def test_dataframe_columns_keep_their_order(self):
        # The JSONL ingest makes columns "in order of first appearance" (src/data/
        # jsonl_source.cpp); a DataFrame is pushed as JSON lines, so its order must survive.
        c = client()
        df = pd.DataFrame({"zeta": [1, 2], "alpha": ["a", "b"], "mid": [0.5, 1.5]})
        c.push_dataset("py-order", df)
        self.assertEqual(list(c.load_dataset("py-order", format="pandas").columns),
                         ["zeta", "alpha", "mid"])

    def test_push_files_csv_and_npy_pair(self):
        c = client()
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        csv_path = os.path.join(tmp, "iris.csv")
        with open(csv_path, "w") as f:
            f.write("sepal,petal,species\n5.1,1.4,setosa\n7.0,4.7,versicolor\n6.3,6.0,virginica\n")
        pushed = c.push_dataset("py-csv", csv_path, split="1,0,0")
        self.assertEqual(pushed["input"]["path"], "iris.csv")
        got = c.load_dataset("py-csv", format="lists")
        self.assertEqual(got, {"sepal": [5.1, 7.0, 6.3], "petal": [1.4, 4.7, 6.0],
                               "species": ["setosa", "versicolor", "virginica"]})
        xs, ys = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
        np.save(xs, np.arange(24, dtype=np.float32).reshape(6, 2, 2))
        np.save(ys, np.array([1.5, 2.5, 3.5, 4.5, 5.5, 6.5]))
        pushed = c.push_dataset("py-npy", xs, labels=ys)
        self.assertEqual(pushed["input"]["path"], "x.npy")
        got = c.load_dataset("py-npy")
        np.testing.assert_array_equal(got["x"], np.arange(24, dtype=np.float32).reshape(6, 2, 2))
        self.assertEqual(got["label"].dtype, np.float64)

    def test_dataset_errors_name_the_problem(self):
        c = client()
        c.push_dataset("py-err", {"a": [1, 2, 3]})
        with self.assertRaises(dlsys.DlsysError) as cm:
            c.load_dataset("py-err", split="holdout")
        self.assertEqual(cm.exception.status, 400)
        self.assertIn("train, validation or test", cm.exception.message)
        with self.assertRaises(dlsys.DlsysError) as cm:
            c.load_dataset("py-err", version=9)
        self.assertEqual(cm.exception.status, 404)
        with self.assertRaises(dlsys.DlsysError) as cm:  # bad rows are refused, listed
            c.push_dataset("py-err", [{"a": 1}, {"a": [1, 2]}, {"a": 3}])
        self.assertEqual(cm.exception.status, 400)


@unittest.skipIf(np is None or importlib.util.find_spec("onnx") is None,
                 "needs NumPy and onnx (apt install python3-numpy python3-onnx)")
class ModelsAndServingTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)
        rng = np.random.default_rng(3)
        self.W1, self.B1 = rng.normal(size=(3, 2)), rng.normal(size=2)
        self.W2, self.B2 = rng.normal(size=(3, 2)), rng.normal(size=2)
        self.m1, self.m2 = os.path.join(self.tmp, "m1.onnx"), os.path.join(self.tmp, "m2.onnx")
        lib.make_gemm_onnx(self.m1, self.W1, self.B1)
        lib.make_gemm_onnx(self.m2, self.W2, self.B2)

    @staticmethod
    def expected(x, W, B):
        return x.astype(np.float32) @ W.astype(np.float32) + B.astype(np.float32)

    def test_upload_deploy_infer_canary_promote_rollback(self):
        c = client()
        v1 = c.upload_model("py-gemm", self.m1, description="first", alias="production")
        self.assertEqual((v1["version"], v1["run_id"], v1["aliases"]), (1, None, ["production"]))
        dep = c.create_deployment("py-gemm", "py-gemm@production", max_batch=8)
        self.assertEqual(dep["status"]["version"], 1)
        self.assertIn("py-gemm", [d["name"] for d in c.list_deployments()])

        x = np.random.default_rng(4).normal(size=(5, 3))  # float64: sent as the model's FP32
        out = c.infer("py-gemm", {"x": x})
        self.assertEqual(out["y"].shape, (5, 2))
        self.assertEqual(out["y"].dtype, np.float32)
        np.testing.assert_allclose(out["y"], self.expected(x, self.W1, self.B1), rtol=1e-5,
                                   atol=1e-5)
        self.assertEqual(out.model_version, "1")
        binary = c.infer("py-gemm", x, binary=True)  # one input: no name needed
        np.testing.assert_array_equal(binary["y"], out["y"])
        lists = c.infer("py-gemm", {"x": x.tolist()}, as_numpy=False)
        self.assertEqual(len(lists["y"]), 5)
        np.testing.assert_allclose(np.array(lists["y"]), out["y"], rtol=1e-6)

        with self.assertRaises(dlsys.DlsysError) as cm:
            c.infer("py-gemm", {"x": np.zeros((2, 5))})
        self.assertEqual(cm.exception.status, 400)
        self.assertIn("does not match the model's", cm.exception.message)

        # version 2 from a run's artifact, then a canary of it at 100%, promoted
        with c.start_run(experiment="py-models") as run:
            run.log_artifact(self.m2)
        v2 = c.register_model("py-gemm", run.id, artifact_path="m2.onnx")
        self.assertEqual((v2["version"], v2["run_id"]), (2, run.id))
        self.assertEqual([v["version"] for v in c.list_model_versions("py-gemm")], [1, 2])
        c.update_deployment("py-gemm", canary={"model": "py-gemm", "version": 2, "weight": 100})
        out2 = c.infer("py-gemm", {"x": x})
        self.assertEqual(out2.model_version, "2")
        np.testing.assert_allclose(out2["y"], self.expected(x, self.W2, self.B2), rtol=1e-5,
                                   atol=1e-5)
        pinned = c.infer("py-gemm", {"x": x}, version=1)
        self.assertEqual(pinned.model_version, "1")
        c.promote_deployment("py-gemm")
        self.assertEqual(c.get_alias("py-gemm", "production")["version"], 2)
        self.assertEqual(c.infer("py-gemm", x).model_version, "2")
        # a canary of version 1 rolled back: version 2 answers everything
        c.update_deployment("py-gemm", canary={"model": "py-gemm", "version": 1, "weight": 100})
        self.assertEqual(c.infer("py-gemm", x).model_version, "1")
        back = c.rollback_deployment("py-gemm")
        self.assertNotIn("canary", back.get("config", {}))
        self.assertEqual(c.infer("py-gemm", x).model_version, "2")
        with self.assertRaises(dlsys.DlsysError) as cm:
            c.rollback_deployment("py-gemm")
        self.assertEqual(cm.exception.status, 400)

        # aliases
        moved = c.set_alias("py-gemm", "staging", 1)
        self.assertEqual(moved["version"], 1)
        self.assertEqual(c.get_model_version("py-gemm", "staging")["version"], 1)
        c.delete_alias("py-gemm", "staging")
        with self.assertRaises(dlsys.DlsysError) as cm:
            c.get_alias("py-gemm", "staging")
        self.assertEqual(cm.exception.status, 404)
        path = c.download_model("py-gemm", "production", self.tmp)
        with open(path, "rb") as f, open(self.m2, "rb") as g:
            self.assertEqual(f.read(), g.read())
        self.assertIn("py-gemm", [m["name"] for m in c.list_models(name_like="py-%")])
        c.delete_deployment("py-gemm")
        self.assertNotIn("py-gemm", [d["name"] for d in c.list_deployments()])

    def test_a_file_that_is_not_a_model_is_refused_naming_it(self):
        bad = os.path.join(self.tmp, "notes.onnx")
        with open(bad, "wb") as f:
            f.write(b"this is not a protobuf")
        with self.assertRaises(dlsys.DlsysError) as cm:
            client().upload_model("py-bad", bad)
        self.assertEqual(cm.exception.status, 400)
        self.assertIn("notes.onnx", cm.exception.message)


class JobsAndPipelinesTest(unittest.TestCase):
    def test_command_job_log_streams_to_its_end(self):
        c = client()
        job = c.submit_job({
            "kind": "command", "name": "py-echo",
            "command": ["/bin/sh", "-c", "echo first; echo second; "
                        "echo '{\"metric\": \"loss\", \"value\": 0.25, \"step\": 3}'"],
        })
        self.assertEqual(job["state"], "QUEUED")
        text = "".join(c.stream_job_log(job["id"], timeout=120))
        self.assertIn("first\nsecond\n", text)
        done = c.get_job(job["id"])
        self.assertEqual(done["state"], "SUCCEEDED")
        self.assertEqual(c.get_run(done["run_id"]).metrics["loss"], 0.25)
        self.assertIn(job["id"], [j["id"] for j in c.list_jobs(state="succeeded")])

    def test_job_wait_deadline_and_cancel(self):
        c = client()
        job = c.submit_job({"kind": "command", "name": "py-sleep",
                            "command": ["/bin/sleep", "120"]})
        t0 = time.monotonic()
        with self.assertRaises(dlsys.DlsysTimeout) as cm:
            for _ in c.stream_job_log(job["id"], timeout=1.0):
                pass
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(cm.exception.code, "DEADLINE_EXCEEDED")
        with self.assertRaises(dlsys.DlsysTimeout):
            c.wait_job(job["id"], timeout=0.5)
        c.cancel_job(job["id"])
        self.assertEqual(c.wait_job(job["id"], timeout=60)["state"], "CANCELLED")
        with self.assertRaises(dlsys.DlsysError) as cm:
            c.cancel_job(job["id"])
        self.assertEqual(cm.exception.status, 409)

    def test_bad_job_spec_is_a_400_naming_the_field(self):
        with self.assertRaises(dlsys.DlsysError) as cm:
            client().submit_job({"kind": "command", "command": ["/bin/true"],
                                 "resources": {"threads": 0}})
        self.assertEqual(cm.exception.status, 400)
        self.assertIn("threads", cm.exception.message)

    def test_pipeline_create_run_and_wait(self):
        c = client()
        spec = ("name: pygate\nparams:\n  x: 2\nsteps:\n  - name: check\n    kind: gate\n"
                "    condition: ${params.x} > 1\n")
        p = c.create_pipeline(spec)
        self.assertEqual((p["name"], p["version"]), ("pygate", 1))
        self.assertEqual([s["name"] for s in p["steps"]], ["check"])
        run = c.start_pipeline_run("pygate", params={"x": 5})
        done = c.wait_pipeline_run(run["id"], "pygate", timeout=60)
        self.assertEqual(done["state"], "SUCCEEDED")
        self.assertEqual(done["steps"][0]["outputs"]["passed"], True)
        run = c.start_pipeline_run("pygate", params={"x": 0})
        done = c.wait_pipeline_run(run["id"], timeout=60)
        self.assertEqual(done["steps"][0]["outputs"]["passed"], False)
        self.assertEqual(len(c.list_pipeline_runs("pygate")), 2)
        same = c.start_pipeline_run("pygate", event_id="evt-1")
        again = c.start_pipeline_run("pygate", event_id="evt-1")
        self.assertEqual((same["id"], same["created"], again["created"]),
                         (again["id"], True, False))
        with self.assertRaises(dlsys.DlsysError) as cm:
            c.start_pipeline_run("pygate", params={"nope": 1})
        self.assertIn("(its parameters: x)", cm.exception.message)
        with self.assertRaises(dlsys.DlsysError) as cm:
            c.create_pipeline("name: broken\nsteps:\n  - name: a\n    kind: nope\n",
                              file="broken.yaml")
        self.assertIn("broken.yaml:4", cm.exception.message)


class AuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = lib.Server(extra=["--auth"])
        # tokens are made on the data directory before the server opens it
        out = cls.server.cli("tokens", "create", "--data-dir", cls.server.data_dir, "--role",
                             "editor", "--name", "py-editor", "--json")
        cls.editor = json.loads(out)["token"]
        out = cls.server.cli("tokens", "create", "--data-dir", cls.server.data_dir, "--role",
                             "viewer", "--name", "py-viewer", "--json")
        cls.viewer = json.loads(out)["token"]
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()

    def test_no_token_is_401_and_a_token_works(self):
        saved = os.environ.pop("DLSYS_TOKEN", None)
        try:
            anon = dlsys.Client(self.server.url)
        finally:
            if saved is not None:
                os.environ["DLSYS_TOKEN"] = saved
        with self.assertRaises(dlsys.DlsysError) as cm:
            anon.start_run(experiment="auth")
        self.assertEqual((cm.exception.status, cm.exception.code), (401, "UNAUTHENTICATED"))
        self.assertIn("DLSYS_TOKEN", str(cm.exception))
        with self.assertRaises(dlsys.DlsysError) as cm:
            dlsys.Client(self.server.url, token="not-a-token").list_datasets()
        self.assertEqual(cm.exception.status, 401)

        editor = dlsys.Client(self.server.url, token=self.editor)
        with editor.start_run(experiment="auth") as run:
            run.log_metric("m", 1.0)
        self.assertEqual(editor.get_run(run.id).metrics, {"m": 1.0})
        try:
            me = editor.whoami()
        except dlsys.DlsysError as e:
            if e.status != 404:
                raise
        else:
            self.assertEqual((me["role"], me["auth"]), ("editor", True))

    def test_the_token_comes_from_the_environment_and_roles_hold(self):
        saved = os.environ.get("DLSYS_TOKEN")
        os.environ["DLSYS_TOKEN"] = self.viewer
        try:
            viewer = dlsys.Client(self.server.url)
        finally:
            if saved is None:
                del os.environ["DLSYS_TOKEN"]
            else:
                os.environ["DLSYS_TOKEN"] = saved
        self.assertIsInstance(viewer.list_datasets(), list)
        with self.assertRaises(dlsys.DlsysError) as cm:
            viewer.start_run(experiment="auth")
        self.assertEqual((cm.exception.status, cm.exception.code), (403, "PERMISSION_DENIED"))


class WithoutNumpyTest(unittest.TestCase):
    """The client needs only the standard library: NumPy and pandas blocked from import."""

    def test_runs_datasets_and_inference_with_the_standard_library_only(self):
        code = r"""
import json, sys
sys.modules["numpy"] = None   # any import of them fails
sys.modules["pandas"] = None
sys.path.insert(0, sys.argv[2])
import dlsys
c = dlsys.Client(sys.argv[1])
with c.start_run(experiment="no-numpy") as run:
    for i in range(3):
        run.log_metric("m", i / 2, step=i)
hist = [m.value for m in c.get_metric_history(run.id, "m")]
c.push_dataset("no-numpy", {"n": [1, 2, 3], "s": ["a", None, "c"], "v": [[1, 2], [3, 4], [5, 6]]},
               split="1,0,0")
rows = c.load_dataset("no-numpy", format="lists")
try:
    c.load_dataset("no-numpy")
    needs = "no error"
except ImportError as e:
    needs = str(e)
print(json.dumps({"hist": hist, "rows": rows, "needs": needs}))
"""
        p = subprocess.run(["/usr/bin/python3", "-c", code, _server.url, lib.CLIENT_DIR],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout)
        self.assertEqual(out["hist"], [0.0, 0.5, 1.0])
        self.assertEqual(out["rows"], {"n": [1, 2, 3], "s": ["a", None, "c"],
                                       "v": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]})
        self.assertIn("format='lists'", out["needs"])

    @unittest.skipIf(importlib.util.find_spec("onnx") is None or np is None,
                     "needs onnx and NumPy to make the model (apt install python3-onnx)")
    def test_infer_with_nested_lists(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        W, B = np.arange(6.0).reshape(3, 2), np.array([0.5, -0.5])
        lib.make_gemm_onnx(os.path.join(tmp, "m.onnx"), W, B)
        c = client()
        c.upload_model("py-lists", os.path.join(tmp, "m.onnx"), alias="production")
        c.create_deployment("py-lists", "py-lists")  # ref: production by default
        code = r"""
import json, sys
sys.modules["numpy"] = None
sys.path.insert(0, sys.argv[2])
import dlsys
c = dlsys.Client(sys.argv[1])
a = c.infer("py-lists", {"x": [[1, 0, 0], [0, 1, 2]]})
b = c.infer("py-lists", [[1, 0, 0], [0, 1, 2]], binary=True)
print(json.dumps([a, b, a.model_version]))
"""
        p = subprocess.run(["/usr/bin/python3", "-c", code, _server.url, lib.CLIENT_DIR],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        a, b, version = json.loads(p.stdout)
        want = (np.array([[1, 0, 0], [0, 1, 2]]) @ W + B).tolist()
        self.assertEqual(a, {"y": want})
        self.assertEqual(b, {"y": want})
        self.assertEqual(version, "1")


class InstalledPackageTest(unittest.TestCase):
    """`pip install ./clients/python` into a venv, offline, then imported outside the tree."""

    def test_pip_install_offline_into_a_venv_and_import(self):
        py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        probe = subprocess.run([py, "-c", "import venv, ensurepip, setuptools, wheel"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            self.skipTest("venv, ensurepip, setuptools or wheel is missing (Debian: apt install "
                          "python3-venv python3-pip python3-setuptools python3-wheel): "
                          + probe.stderr.strip().splitlines()[-1])
        tmp = tempfile.mkdtemp(prefix="dlsys-venv-")
        self.addCleanup(shutil.rmtree, tmp)
        # a copy, so that the build's files (build/, *.egg-info) stay out of the source tree
        src = os.path.join(tmp, "src")
        shutil.copytree(lib.CLIENT_DIR, src,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        venv = os.path.join(tmp, "venv")
        subprocess.run([py, "-m", "venv", "--system-site-packages", venv], check=True,
                       capture_output=True)
        vpy = os.path.join(venv, "bin", "python")
        env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        env.pop("PYTHONPATH", None)
        p = subprocess.run([vpy, "-m", "pip", "install", "--no-build-isolation", "--no-index",
                            src], capture_output=True, text=True, env=env, timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        code = ("import dlsys, sys; c = dlsys.Client(sys.argv[1]); "
                "print(dlsys.__file__); print(c.health()['status'])")
        p = subprocess.run([vpy, "-c", code, _server.url], capture_output=True, text=True,
                           env=env, cwd=tmp, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        where, status = p.stdout.split()
        self.assertTrue(where.startswith(os.path.realpath(venv)) or where.startswith(venv), where)
        self.assertFalse(where.startswith(lib.CLIENT_DIR), where)
        self.assertEqual(status, "ok")


if __name__ == "__main__":
    unittest.main()
