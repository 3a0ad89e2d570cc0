"""What the Python client's tests share: the dlsys binary, a real `dlsys server` on a free
loopback port, the client on the import path, and a tiny ONNX model made with onnx.helper."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENT_DIR = os.path.join(ROOT, "clients", "python")
if CLIENT_DIR not in sys.path:
    sys.path.insert(0, CLIENT_DIR)


def take_binary_from_argv() -> None:
    """`test_x.py [--dlsys PATH | PATH] [unittest args]`: the binary from the command line goes
    to $DLSYS_BIN, the rest to unittest."""
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "--dlsys":
        os.environ["DLSYS_BIN"] = args[1]
        del sys.argv[1:3]
    elif args and not args[0].startswith("-") and os.path.isfile(args[0]):
        os.environ["DLSYS_BIN"] = args[0]
        del sys.argv[1]


def dlsys_binary() -> str:
    """$DLSYS_BIN, else build/dlsys of the source tree; an error saying how to give it."""
    cand = os.environ.get("DLSYS_BIN") or os.path.join(ROOT, "build", "dlsys")
    if not (os.path.isfile(cand) and os.access(cand, os.X_OK)):
        raise RuntimeError(
            f"no dlsys binary at {cand}: build it (make build) or set DLSYS_BIN=/path/to/dlsys "
            "(or pass the path as the first argument)")
    return os.path.abspath(cand)


class Server:
    """`dlsys server --data-dir TMP --port 0 --access-log off [extra]`, stopped with SIGTERM."""

    def __init__(self, extra: Optional[List[str]] = None, data_dir: Optional[str] = None,
                 start_timeout: float = 60):
        self.binary = dlsys_binary()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="dlsys-pyclient-")
        self.extra = list(extra or [])
        self.start_timeout = start_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.url: Optional[str] = None
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.output: List[str] = []

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """Runs `dlsys ARGS` (e.g. on this server's data directory) and returns its stdout."""
        p = subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"dlsys {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return p.stdout

    def start(self) -> "Server":
        cmd = [self.binary, "server", "--data-dir", self.data_dir, "--port", "0",
               "--access-log", "off", *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)

        def drain(stream):
            for line in stream:
                self.output.append(line)
                self._lines.put(line)
            self._lines.put(None)

        self._drain = threading.Thread(target=drain, args=(self.proc.stdout,), daemon=True)
        self._drain.start()
        while True:
            try:
                line = self._lines.get(timeout=self.start_timeout)
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"dlsys server printed no address within "
                                   f"{self.start_timeout} s: {''.join(self.output)[-2000:]}")
            if line is None:
                raise RuntimeError(f"dlsys server exited ({self.proc.wait()}) before it "
                                   f"listened: {''.join(self.output)[-2000:]}")
            m = re.search(r"dlsys server on (http://\S+)", line)
            if m:
                self.url = m.group(1)
                return self

    def stop(self) -> int:
        """SIGTERM, then the exit code (SIGKILL after 30 s)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout and not self.proc.stdout.closed:
            self._drain.join(timeout=10)  # it ends at the pipe's end
            self.proc.stdout.close()
        return self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def make_gemm_onnx(path: str, W, B) -> None:
    """A one-node ONNX model: y = x @ W + B, x float32 [N, W.rows]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", W.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", W.shape[1]])
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"])], "gemm", [x], [y],
        [numpy_helper.from_array(np.asarray(W, np.float32), "W"),
         numpy_helper.from_array(np.asarray(B, np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, path)
