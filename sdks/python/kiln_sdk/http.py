"""Outgoing HTTP over `wasi:http`: `http.get(url)`, `http.post(url, json=...)`, `http.request(...)`,
each returning a whole `Response`. kiln sends only to hosts its environment's allow-list names
(anything else is an `HttpError` with `denied` true) and journals every response, so a run
replayed after a checkpoint gets its earlier responses without sending the requests again.

Blocking on purpose: a task's host calls are synchronous, and so is this. It never leaves a
resource undropped: every stream is closed before its body, every body before its message.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union
from urllib.parse import urlsplit

from ._host import err_value, is_err, module

#: Most bytes written to the request body stream per call (wasi:io's write limit is 4096).
_WRITE_CHUNK = 4096
#: Bytes asked for per read of the response body.
_READ_CHUNK = 65536


class HttpError(Exception):
    """The request failed: refused by kiln's allow-list (`denied`), or a network or limit error."""

    def __init__(self, code: str, detail: Optional[str] = None) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        #: The `wasi:http` error code, e.g. `HttpRequestDenied`, `ConnectionRefused`.
        self.code = code
        self.denied = code == "HttpRequestDenied"


@dataclass
class Response:
    status: int
    #: Header names in lower case; a repeated header's values joined with ", ".
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, errors="replace")

    def json(self) -> Any:
        return _json.loads(self.body)


def _method(h: Any, method: str) -> Any:
    name = method.upper()
    known = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
    if name in known:
        return getattr(h, f"Method_{name.capitalize()}")()
    return h.Method_Other(name)


def _error(e: BaseException) -> HttpError:
    value = err_value(e)
    code = type(value).__name__.removeprefix("ErrorCode_")
    detail = getattr(value, "value", None)
    return HttpError(code, None if detail is None else str(detail))


def request(
    method: str,
    url: str,
    *,
    headers: Optional[Mapping[str, str]] = None,
    body: Union[bytes, str, None] = None,
    json: Any = None,
) -> Response:
    """Sends a request and reads the whole response."""
    h = module("wasi_http_types")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HttpError("HttpRequestUriInvalid", f"{url!r} is not an http(s) URL")
    entries = [(k.lower(), v.encode()) for k, v in (headers or {}).items()]
    if json is not None:
        body = _json.dumps(json)
        if not any(k == "content-type" for k, _ in entries):
            entries.append(("content-type", b"application/json"))
    data = body.encode() if isinstance(body, str) else body

    request = h.OutgoingRequest(h.Fields.from_list(entries))
    request.set_method(_method(h, method))
    request.set_scheme(h.Scheme_Https() if parts.scheme == "https" else h.Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    outgoing = request.body()
    if data:
        with outgoing.write() as stream:
            for i in range(0, len(data), _WRITE_CHUNK):
                stream.blocking_write_and_flush(data[i : i + _WRITE_CHUNK])
    h.OutgoingBody.finish(outgoing, None)

    try:
        future = module("outgoing_handler").handle(request, None)
    except Exception as e:
        if is_err(e):
            raise _error(e) from None
        raise
    with future:
        with future.subscribe() as ready:
            ready.block()
        outcome = future.get()
    if outcome is None or type(outcome).__name__ == "Err":
        raise HttpError("InternalError", "the response was taken twice")
    inner = outcome.value
    if type(inner).__name__ == "Err":
        raise _error(inner)
    with inner.value as response:
        status = response.status()
        with response.headers() as fields:
            collected: dict[str, str] = {}
            for name, value in fields.entries():
                text = value.decode("latin-1")
                collected[name] = f"{collected[name]}, {text}" if name in collected else text
        incoming = response.consume()
        chunks = []
        with incoming.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(_READ_CHUNK))
                except Exception as e:
                    if is_err(e) and type(err_value(e)).__name__ == "StreamError_Closed":
                        break
                    raise HttpError("HttpResponseIncomplete", str(err_value(e))) from None
        h.IncomingBody.finish(incoming).__exit__(None, None, None)
    return Response(status=status, headers=collected, body=b"".join(chunks))


def get(url: str, *, headers: Optional[Mapping[str, str]] = None) -> Response:
    return request("GET", url, headers=headers)


def post(url: str, *, headers: Optional[Mapping[str, str]] = None, body: Union[bytes, str, None] = None, json: Any = None) -> Response:
    return request("POST", url, headers=headers, body=body, json=json)


def put(url: str, *, headers: Optional[Mapping[str, str]] = None, body: Union[bytes, str, None] = None, json: Any = None) -> Response:
    return request("PUT", url, headers=headers, body=body, json=json)


def delete(url: str, *, headers: Optional[Mapping[str, str]] = None) -> Response:
    return request("DELETE", url, headers=headers)
