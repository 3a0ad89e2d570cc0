#!/usr/bin/python3
"""examples/notebooks/explore.ipynb executed with `jupyter nbconvert --execute` against a real
`dlsys server` seeded with a dataset, three runs and a deployment.

    DLSYS_BIN=build/dlsys /usr/bin/python3 tests/python_client/test_notebook.py [-v]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dlsys_testlib as lib  # noqa: E402

lib.take_binary_from_argv()

import dlsys  # noqa: E402

NOTEBOOK = os.path.join(lib.ROOT, "examples", "notebooks", "explore.ipynb")


def jupyter() -> str:
    for cand in ("/usr/bin/jupyter", shutil.which("jupyter")):
        if cand and os.path.exists(cand):
            return cand
    return ""


def missing_tools() -> str:
    if not jupyter():
        return "jupyter is not installed (apt install jupyter-notebook python3-nbconvert)"
    p = subprocess.run([jupyter(), "nbconvert", "--version"], capture_output=True, text=True)
    if p.returncode != 0:
        return "jupyter nbconvert is missing (apt install python3-nbconvert python3-ipykernel)"
    for mod in ("numpy", "pandas", "onnx", "ipykernel"):
        p = subprocess.run(["/usr/bin/python3", "-c", f"import {mod}"], capture_output=True)
        if p.returncode != 0:
            return f"/usr/bin/python3 has no {mod} (apt install python3-{mod})"
    return ""


class NotebookTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = lib.Server().start()
        cls.tmp = tempfile.mkdtemp(prefix="dlsys-nb-")
        cls.seed(dlsys.Client(cls.server.url))

    @classmethod
    def seed(cls, c):
        """A dataset (40 rows: x [3] and a label), 3 runs of nb-exp (and one elsewhere), and the
        deployment nb-deploy of a Gemm model y = x @ W + B."""
        import numpy as np

        rng = np.random.default_rng(7)
        cls.x = rng.normal(size=(40, 3))
        c.push_dataset("nb-data", cls.x, labels=(cls.x[:, 0] > 0).astype(np.int64),
                       split=(1.0, 0.0, 0.0), message="seeded for the notebook")
        for i, lr in enumerate((0.1, 0.05, 0.01)):
            with c.start_run(experiment="nb-exp", name=f"trial-{i}", params={"lr": lr}) as run:
                for step in range(5):
                    run.log_metric("accuracy", 0.5 + 0.1 * i + 0.01 * step, step=step)
        with c.start_run(experiment="other", name="unrelated") as run:
            run.log_metric("accuracy", 0.99)
        cls.W, cls.B = rng.normal(size=(3, 2)), rng.normal(size=2)
        model = os.path.join(tempfile.mkdtemp(dir=cls.tmp), "gemm.onnx")
        lib.make_gemm_onnx(model, cls.W, cls.B)
        c.upload_model("nb-model", model, alias="production")
        c.create_deployment("nb-deploy", "nb-model@production")

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    EXAMPLE_ENV = {"DLSYS_EXAMPLE_DATASET": "nb-data@v1", "DLSYS_EXAMPLE_EXPERIMENT": "nb-exp",
                   "DLSYS_EXAMPLE_METRIC": "accuracy", "DLSYS_EXAMPLE_DEPLOYMENT": "nb-deploy"}

    def test_explore_notebook_runs_to_its_end_with_the_expected_values(self):
        why = missing_tools()
        if why:
            self.skipTest(why)
        out_dir = os.path.join(self.tmp, "out")
        env = dict(os.environ, DLSYS_URL=self.server.url, **self.EXAMPLE_ENV,
                   PYTHONPATH=lib.CLIENT_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   # Jupyter's state stays in the test's folder
                   JUPYTER_RUNTIME_DIR=os.path.join(self.tmp, "runtime"),
                   JUPYTER_CONFIG_DIR=os.path.join(self.tmp, "config"),
                   IPYTHONDIR=os.path.join(self.tmp, "ipython"))
        env.pop("DLSYS_TOKEN", None)
        p = subprocess.run(
            [jupyter(), "nbconvert", "--to", "notebook", "--execute",
             "--ExecutePreprocessor.timeout=120", "--ExecutePreprocessor.kernel_name=python3",
             "--output-dir", out_dir, "--output", "explore.out.ipynb", NOTEBOOK],
            capture_output=True, text=True, env=env, timeout=600, cwd=self.tmp)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr[-4000:])
        with open(os.path.join(out_dir, "explore.out.ipynb")) as f:
            nb = json.load(f)
        self.check_outputs(nb, self.server.url, "local (role admin, auth off)")

    def test_dlsys_notebook_execute_with_auth_gives_the_notebook_a_scoped_token(self):
        why = missing_tools()
        if why:
            self.skipTest(why)
        if "notebook" not in self.server.cli("--help"):
            self.skipTest("this dlsys binary has no `dlsys notebook` command yet")
        server = lib.Server(extra=["--auth"])
        admin = json.loads(server.cli("tokens", "create", "--data-dir", server.data_dir,
                                      "--role", "admin", "--name", "nb-admin", "--json"))
        server.start()
        self.addCleanup(server.cleanup)
        admin_client = dlsys.Client(server.url, token=admin["token"])
        self.seed(admin_client)
        out = os.path.join(self.tmp, "auth-out.ipynb")
        env = dict(os.environ, **self.EXAMPLE_ENV, DLSYS_PYTHON_CLIENT=lib.CLIENT_DIR)
        env.pop("DLSYS_TOKEN", None)
        env.pop("DLSYS_URL", None)
        p = subprocess.run(
            [server.binary, "notebook", "--server", server.url, "--token", admin["token"],
             "--role", "viewer", "--dir", os.path.join(self.tmp, "nbdir"), "--execute",
             NOTEBOOK, "--output", out, "--timeout-s", "120"],
            capture_output=True, text=True, env=env, timeout=600)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr[-4000:])
        with open(out) as f:
            nb = json.load(f)
        # the notebook ran with a viewer token of its own, revoked when it ended
        self.check_outputs(nb, server.url, "(role viewer, auth on)")
        own = [t for t in admin_client.list_tokens() if t.get("role") == "viewer"]
        self.assertEqual(len(own), 1, admin_client.list_tokens())
        self.assertTrue(own[0]["revoked"], own)

    def check_outputs(self, nb, url, who):
        text, errors = [], []
        for cell in nb["cells"]:
            for o in cell.get("outputs", []):
                if o["output_type"] == "error":
                    errors.append(f"{o['ename']}: {o['evalue']}")
                elif o["output_type"] == "stream":
                    if o.get("name") == "stderr":
                        errors.append("stderr: " + "".join(o["text"]))
                    text.append("".join(o["text"]))
                else:
                    text.append("".join(o.get("data", {}).get("text/plain", "")))
        self.assertEqual(errors, [])
        out = "\n".join(text)
        self.assertIn(f"server {url} as ", out)
        self.assertIn(who, out)
        self.assertIn("nb-data@v1: rows: 40", out)
        self.assertIn("train rows: 40", out)
        self.assertIn("histogram of 'label':", out)
        self.assertIn("runs: 3", out)  # only nb-exp's runs
        self.assertIn("runs ranked by accuracy (highest first):", out)
        self.assertIn("best run", out)
        self.assertIn("deployment nb-deploy: nb-model@production serves version 1 (ready)", out)
        self.assertIn("y: prediction shape: (5, 2), answered by version 1", out)
        # the last table shows the model's answer for the first 5 rows
        import numpy as np

        last = [o for o in nb["cells"][-2]["outputs"] if o["output_type"] == "execute_result"]
        self.assertEqual(len(last), 1, nb["cells"][-2])
        lines = "".join(last[0]["data"]["text/plain"]).splitlines()[1:]
        shown = np.array([[float(v) for v in line.split()[1:]] for line in lines])
        expected = self.x[:5].astype(np.float32) @ self.W.astype(np.float32) + self.B.astype(
            np.float32)
        np.testing.assert_allclose(shown, expected, atol=2e-6)


if __name__ == "__main__":
    unittest.main()
