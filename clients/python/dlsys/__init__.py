"""dlsys: the Python client of a dlsys server.

Runs and metrics, artifacts, datasets (push from files, NumPy arrays and DataFrames; load into
NumPy or pandas), the model registry and aliases, deployments and inference over the Open
Inference Protocol (KServe v2), jobs and pipelines. Standard library only; NumPy and pandas
are used when installed.

    import dlsys

    client = dlsys.Client()          # $DLSYS_URL (default http://127.0.0.1:8080), $DLSYS_TOKEN
    with client.start_run(experiment="digits", params={"lr": 0.1}) as run:
        for step in range(100):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
"""

from .client import DEFAULT_URL, Client, runs_frame
from .errors import DlsysError, DlsysTimeout
from ._v2 import InferResult
from .tracking import Metric, MetricHistory, Run

__version__ = "0.1.0"

__all__ = [
    "Client",
    "DEFAULT_URL",
    "DlsysError",
    "DlsysTimeout",
    "InferResult",
    "Metric",
    "MetricHistory",
    "Run",
    "runs_frame",
    "__version__",
]
