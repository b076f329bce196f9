"""What a request can get wrong, as HTTP answers: a status code and one readable sentence."""

from __future__ import annotations

from geoscope.errors import GeoscopeError


class RequestError(GeoscopeError):
    """A request the server refuses: ``status`` (4xx / 5xx), a one-sentence message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = dict(headers or {})


class Overloaded(RequestError):
    """The bounded queue is full: 429 with ``Retry-After`` (whole seconds) rather than an unbounded wait."""

    def __init__(self, message: str, retry_after_s: int):
        retry_after_s = max(1, int(retry_after_s))
        super().__init__(429, message, {"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s
