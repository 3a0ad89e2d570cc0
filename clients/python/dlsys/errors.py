"""The one exception type of the client: :class:`DlsysError`."""

from __future__ import annotations

from typing import Optional


class DlsysError(Exception):
    """An error from the dlsys server, or on the way to it.

    Every failure of a call to the server raises this (never a bare ``urllib`` or
    ``http.client`` exception), carrying:

    * ``status``: the HTTP status (``404``, ``401``, ...), or ``None`` when no answer came
      (the server could not be reached, the request timed out, a deadline passed);
    * ``code``: the server's error code (``NOT_FOUND``, ``INVALID_ARGUMENT``,
      ``UNAUTHENTICATED``, ...), or the client's own (``UNREACHABLE``, ``TIMEOUT``,
      ``DEADLINE_EXCEEDED``, ``BAD_RESPONSE``);
    * ``message``: the server's message, which says what went wrong and what to do;
    * ``method``, ``path`` and ``request_id`` (the server's ``X-Request-Id``, which its log
      names) of the request that failed.
    """

    def __init__(
        self,
        message: str,
        status: Optional[int] = None,
        code: Optional[str] = None,
        method: Optional[str] = None,
        path: Optional[str] = None,
        request_id: Optional[str] = None,
    ):
        self.message = message
        self.status = status
        self.code = code
        self.method = method
        self.path = path
        self.request_id = request_id
        super().__init__(str(self))

    def __str__(self) -> str:
        head = []
        if self.status is not None:
            head.append(str(self.status))
        if self.code:
            head.append(self.code)
        text = (" ".join(head) + ": " if head else "") + self.message
        where = []
        if self.method and self.path:
            where.append(f"{self.method} {self.path}")
        if self.request_id:
            where.append(f"request id {self.request_id}")
        if where:
            text += " (" + ", ".join(where) + ")"
        return text

    def __reduce__(self):  # picklable (multiprocessing, joblib)
        return (
            self.__class__,
            (self.message, self.status, self.code, self.method, self.path, self.request_id),
        )


class DlsysTimeout(DlsysError):
    """A wait with a deadline ended before what it waited for (a job, a pipeline run).

    ``status`` is ``None`` and ``code`` is ``DEADLINE_EXCEEDED``; the object waited for is
    left as it was (the job still runs): wait again, or cancel it.
    """
