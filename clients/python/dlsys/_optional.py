"""NumPy and pandas, imported only when a call needs them (the client needs neither)."""

from __future__ import annotations

import importlib
from typing import Any, Optional

_cache = {}


def _try(name: str) -> Optional[Any]:
    if name not in _cache:
        try:
            _cache[name] = importlib.import_module(name)
        except ImportError:
            _cache[name] = None
    return _cache[name]


def numpy() -> Optional[Any]:
    """The numpy module, or None when it is not installed."""
    return _try("numpy")


def pandas() -> Optional[Any]:
    """The pandas module, or None when it is not installed."""
    return _try("pandas")


def need_numpy(what: str) -> Any:
    np = numpy()
    if np is None:
        raise ImportError(
            f"{what} needs NumPy, which is not installed: install it (apt install python3-numpy, "
            "or pip install numpy), or ask for plain lists (format='lists')")
    return np


def need_pandas(what: str) -> Any:
    pd = pandas()
    if pd is None:
        raise ImportError(
            f"{what} needs pandas, which is not installed: install it (apt install "
            "python3-pandas, or pip install pandas), or ask for NumPy arrays or lists instead")
    return pd


def is_ndarray(x: Any) -> bool:
    np = _cache.get("numpy") or (numpy() if type(x).__module__ == "numpy" else None)
    return np is not None and isinstance(x, np.ndarray)


def is_dataframe(x: Any) -> bool:
    mod = type(x).__module__ or ""
    if not mod.startswith("pandas"):
        return False
    pd = pandas()
    return pd is not None and isinstance(x, pd.DataFrame)
