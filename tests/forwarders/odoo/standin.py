"""An Odoo stand-in: a real HTTP server (a raw ASGI app on uvicorn, agent.common.asgi)
speaking both of Odoo's external APIs with the request and error shapes of a real Odoo
(see /work/shared/ODOO.md).

- ``POST /jsonrpc``: ``common.version``, ``common.authenticate`` (uid, or ``false``),
  ``object.execute_kw``. Errors are **HTTP 200** with ``error.data.name``; a body that is
  not JSON-RPC gets HTTP 400 HTML.
- ``POST /json/2/<model>/<method>`` (when ``json2=True``): bearer key,
  ``X-Odoo-Database``; the bare JSON result, or 401 / 404 / 422 / 500 with
  ``{"name", "message", "arguments", "context", "debug"}``.
- ``GET /web/version`` (JSON-2 servers only, no key).
- Other paths get 404 and other methods 405 (plain text, with ``Allow``).

Test hooks: ``fail_next(status, times)`` answers HTML error pages (as a proxy or a
crashed worker does), ``fail_until_cleared(status)`` / ``stop_failing()``,
``truncate_next(times)`` cuts the JSON answer short, ``delay`` slows every request,
``raise_next(name, message)`` answers an Odoo exception, ``poison`` makes every
``load()`` holding that text fail as a whole, ``revoke(key)``. ``calls``
counts ``(model, method)``; ``auth_attempts`` and ``denied`` count logins and refused
keys. The data lives in ``db`` (``tests.forwarders.odoo.standin_orm.Database``); ``seed()`` adds
what a fresh mrp database ships (the productivity losses).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import secrets
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote

import orjson

from agent.common.asgi import (
    AsgiServer,
    BodyTooLarge,
    Receive,
    Reply,
    Scope,
    Send,
    read_body,
    send_reply,
)
from tests.forwarders.odoo.standin_orm import Database, OdooError

ACCESS_DENIED = "odoo.exceptions.AccessDenied"
STANDARD_LOSSES = [
    ("Fully Productive Time", "productive"),
    ("Material Availability", "availability"),
    ("Equipment Failure", "availability"),
    ("Setup and Adjustments", "availability"),
    ("Reduced Speed", "performance"),
    ("Process Defect", "quality"),
    ("Reduced Yield", "quality"),
]
JSON2_STATUS = {
    ACCESS_DENIED: 401,
    "werkzeug.exceptions.NotFound": 404,
    "builtins.AttributeError": 404,
    "odoo.exceptions.MissingError": 404,
    "odoo.exceptions.AccessError": 403,
    "odoo.exceptions.UserError": 422,
    "odoo.exceptions.ValidationError": 422,
    "builtins.ValueError": 422,
    "builtins.TypeError": 422,
    "builtins.KeyError": 422,
}
HTML_ERROR = (
    "<!DOCTYPE html><html><head><title>{status} {reason}</title></head>"
    "<body><h1>{reason}</h1><p>nginx</p></body></html>"
)
MAX_BODY = 256 * 1024 * 1024
# Seconds an idle connection stays open: past httpx's 5 s keep-alive expiry, so it is the
# client that ends an idle connection and a request never races the server closing it.
KEEP_ALIVE = 75
SHUTDOWN_TIMEOUT = 5  # seconds close() lets requests in flight finish

HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"  # what the API answers carry: bytes, no charset
JSON_UTF8 = "application/json; charset=utf-8"  # /web/version and JSON-2 errors


def _text(status: int, text: str, content_type: str = HTML) -> Reply:
    return Reply(status, text.encode(), content_type)


def _json_reply(data: Any, status: int = 200) -> Reply:
    """JSON as the standard library writes it (``", "`` and ``": "``), charset=utf-8."""
    return Reply(status, json.dumps(data).encode(), JSON_UTF8)


def _not_allowed(allow: bytes) -> Reply:
    return Reply(405, b"405: Method Not Allowed", TEXT, [(b"allow", allow)])


@dataclass(frozen=True, slots=True)
class _Request:
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its first value
    body: bytes


@dataclass
class _Fault:
    kind: str  # "status" | "truncate" | "error"
    times: int
    status: int = 500
    name: str = ""
    message: str = ""


class OdooStandIn:
    """``async with OdooStandIn() as odoo``: ``odoo.url``, ``odoo.database``, ``odoo.api_key``."""

    def __init__(
        self,
        *,
        version: str = "19.0",
        json2: bool = True,
        database: str = "floorgate",
        user_tz: str = "Europe/Brussels",
        login: str = "floorgate-bot",
    ) -> None:
        self.version = version
        self.json2 = json2
        self.database = database
        self.login = login
        self.api_key = secrets.token_hex(20)
        self.uid = 2
        self.db = Database(user_tz=user_tz)
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.requests = 0
        self.auth_attempts = 0
        self.denied = 0
        self._keys = {self.api_key: self.uid}
        self._faults: list[_Fault] = []
        self._sticky_status: int | None = None
        self.delay = 0.0  # seconds each API request takes (so a kill lands mid-request)
        self.poison: str | None = None  # a load() holding this text fails the whole call
        self._server = AsgiServer(
            self._app,
            name="Odoo stand-in",
            keep_alive=KEEP_ALIVE,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        self.port = 0
        self.seed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seed(self) -> None:
        for name, loss_type in STANDARD_LOSSES:
            self.db.new_record(
                "mrp.workcenter.productivity.loss", {"name": name, "loss_type": loss_type}
            )
        user = self.db.new_record("res.users", {"name": "Floorgate", "login": self.login})
        self.db.new_record("res.users.apikeys", {"name": "floorgate", "user_id": user["id"]})

    # -- test hooks --------------------------------------------------------------------

    def fail_next(self, status: int = 500, times: int = 1) -> None:
        self._faults.append(_Fault("status", times, status=status))

    def fail_until_cleared(self, status: int = 500) -> None:
        self._sticky_status = status

    def stop_failing(self) -> None:
        self._sticky_status = None
        self._faults.clear()

    def truncate_next(self, times: int = 1) -> None:
        self._faults.append(_Fault("truncate", times))

    def raise_next(self, name: str, message: str = "error", times: int = 1) -> None:
        self._faults.append(_Fault("error", times, name=name, message=message))

    def _check_poison(self, method: str, named: dict[str, Any]) -> None:
        """A server-side failure the row cannot be blamed for by load()'s messages (a
        compute or constraint crashing): the RPC fails as a whole."""
        if self.poison and method == "load" and self.poison in orjson.dumps(named).decode():
            raise OdooError("builtins.ValueError", f"cannot process {self.poison!r}")

    def revoke(self, key: str) -> None:
        self._keys.pop(key, None)

    def records(self, model: str) -> list[dict[str, Any]]:
        return list(self.db.tables[model].values())

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        self.port = await self._server.start("127.0.0.1", port)

    async def close(self) -> None:
        await self._server.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- faults ------------------------------------------------------------------------

    def _take_fault(self) -> _Fault | None:
        if self._sticky_status is not None:
            return _Fault("status", 1, status=self._sticky_status)
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.times -= 1
        if fault.times <= 0:
            self._faults.pop(0)
        return fault

    @staticmethod
    def _html(status: int) -> Reply:
        reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        text = HTML_ERROR.format(status=status, reason=reason.get(status, "Error"))
        return _text(status, text)

    # -- HTTP --------------------------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        try:
            reply = await self._route(scope, receive)
        except BodyTooLarge:  # answered unread, so the connection cannot be reused
            text = f"Maximum request body size {MAX_BODY} exceeded"
            reply = Reply(413, text.encode(), TEXT, [(b"connection", b"close")])
        if reply is None:
            return  # the client went away before its body was in
        await send_reply(send, reply, head=method == "HEAD")

    async def _route(self, scope: Scope, receive: Receive) -> Reply | None:
        """The routes as Odoo's own: ``/jsonrpc``, ``/json/2/<model>/<method>`` (matched on
        the raw path, each part then percent-decoded) and ``/web/version``."""
        method = scope["method"]
        raw_path = scope.get("raw_path") or scope["path"].encode()
        parts = raw_path.decode("latin-1").split("/")
        if raw_path == b"/web/version":
            if method not in ("GET", "HEAD"):
                return _not_allowed(b"GET,HEAD")
            return self._version()
        if raw_path == b"/jsonrpc":
            route = "jsonrpc"
        elif len(parts) == 5 and parts[:3] == ["", "json", "2"] and all(parts[3:]):
            route = "json2"
        else:
            return _text(404, "404: Not Found", TEXT)
        if method != "POST":
            return _not_allowed(b"POST")
        body = await read_body(receive, MAX_BODY)
        if body is None:
            return None
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
        request = _Request(headers, body)
        if route == "jsonrpc":
            return await self._jsonrpc(request)
        model, name = (unquote(part) for part in parts[3:])
        return await self._json2(request, model, name)

    # -- JSON-RPC ----------------------------------------------------------------------

    async def _jsonrpc(self, request: _Request) -> Reply:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        fault = self._take_fault()
        if fault is not None and fault.kind == "status":
            return self._html(fault.status)
        try:
            body = orjson.loads(request.body)
            params = body["params"]
            service, method, args = params["service"], params["method"], params.get("args", [])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _text(400, "<html>Bad Request</html>")
        request_id = body.get("id")
        try:
            if fault is not None and fault.kind == "error":
                raise OdooError(fault.name, fault.message)
            result = await self._rpc_service(service, method, args)
        except OdooError as exc:
            return self._rpc_error(request_id, exc)
        payload = {"jsonrpc": "2.0", "id": request_id}
        if result is not None:
            payload["result"] = result
        return self._answer(payload, fault)

    def _answer(self, payload: Any, fault: _Fault | None, status: int = 200) -> Reply:
        data = orjson.dumps(payload)
        if fault is not None and fault.kind == "truncate":
            data = data[: max(1, len(data) // 2)]
        return Reply(status, data, JSON)

    def _rpc_error(self, request_id: Any, exc: OdooError) -> Reply:
        error = {
            "code": 200,
            "message": "Odoo Server Error",
            "data": {
                "name": exc.name,
                "message": exc.message,
                "arguments": [exc.message],
                "context": {},
                "debug": f"Traceback (most recent call last):\n  ...\n{exc.name}: {exc.message}\n",
            },
        }
        return self._answer({"jsonrpc": "2.0", "id": request_id, "error": error}, None)

    async def _rpc_service(self, service: str, method: str, args: list[Any]) -> Any:
        if service == "common" and method == "version":
            major = int(self.version.split(".")[0])
            return {
                "server_version": self.version,
                "server_version_info": [major, 0, 0, "final", 0, ""],
                "server_serie": self.version,
                "protocol_version": 1,
            }
        if service == "common" and method in ("authenticate", "login"):
            self.auth_attempts += 1
            database, login, key = args[0], args[1], args[2]
            self._check_database(database)
            if login != self.login or key not in self._keys:
                self.denied += 1
                await asyncio.sleep(0.05)  # hashing a key costs the server real CPU
                return False
            return self._keys[key]
        if service == "object" and method == "execute_kw":
            database, uid, key, model, name = args[:5]
            positional = args[5] if len(args) > 5 else []
            named = dict(args[6]) if len(args) > 6 and args[6] else {}
            self._check_database(database)
            if self._keys.get(key) != uid:
                self.denied += 1
                raise OdooError(ACCESS_DENIED, "Access Denied")
            return self._dispatch(model, name, positional, named)
        raise OdooError("builtins.KeyError", f"{service}.{method}")

    def _check_database(self, database: str) -> None:
        if database != self.database:
            raise OdooError(
                "psycopg2.OperationalError",
                f'connection to server failed: FATAL:  database "{database}" does not exist',
            )

    def _dispatch(
        self, model: str, method: str, positional: list[Any], named: dict[str, Any]
    ) -> Any:
        from tests.forwarders.odoo.standin_orm import PARAMS, RECORD_METHODS

        self.calls[(model, method)] += 1
        ids: list[int] | None = None
        rest = list(positional)
        if method in RECORD_METHODS:
            if not rest:
                raise OdooError("builtins.TypeError", f"{method}() missing the record ids")
            first = rest.pop(0)
            ids = [first] if isinstance(first, int) else list(first)
        for param, value in zip(PARAMS.get(method, []), rest, strict=False):
            named.setdefault(param, value)
        self._check_named_jsonrpc(model, method, positional, named)
        self._check_poison(method, named)
        return self.db.call(model, method, ids, named)

    @staticmethod
    def _check_named_jsonrpc(
        model: str, method: str, positional: list[Any], named: dict[str, Any]
    ) -> None:
        """What Odoo 18 does with arguments sent by name over JSON-RPC (ODOO.md): its
        dispatcher reads ``args[0]`` of ``create``, and overrides rename ``vals``."""
        if method == "create" and not positional:
            raise OdooError("builtins.IndexError", "tuple index out of range")
        if method == "write" and model == "mrp.workorder" and len(positional) < 2:
            raise OdooError(
                "builtins.TypeError",
                "MrpWorkorder.write() got an unexpected keyword argument 'vals'",
            )

    # -- JSON-2 ------------------------------------------------------------------------

    def _version(self) -> Reply:
        if not self.json2:
            return _text(404, "<html>Not Found</html>")
        major = int(self.version.split(".")[0])
        return _json_reply({"version_info": [major, 0, 0, "final", 0, ""], "version": self.version})

    async def _json2(self, request: _Request, model: str, method: str) -> Reply:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.json2:
            return _text(404, "<html>Not Found</html>")
        fault = self._take_fault()
        if fault is not None and fault.kind == "status":
            return self._html(fault.status)
        auth = request.headers.get("authorization", "")
        key = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else ""
        if key not in self._keys:
            self.denied += 1
            return self._json2_error(OdooError(ACCESS_DENIED, "Access Denied"), 401)
        database = request.headers.get("x-odoo-database", self.database)
        try:
            self._check_database(database)
            body = orjson.loads(request.body or b"{}")
            if not isinstance(body, dict):
                raise OdooError("builtins.TypeError", "the body must be a JSON object")
            if fault is not None and fault.kind == "error":
                raise OdooError(fault.name, fault.message)
            self.calls[(model, method)] += 1
            ids = body.pop("ids", None)
            self._check_poison(method, body)
            result = self.db.call(model, method, ids, body)
            if method == "create" and isinstance(result, int):
                result = [result]  # JSON-2 answers the recordset's ids, even for one dict
        except orjson.JSONDecodeError:
            return self._json2_error(OdooError("builtins.ValueError", "invalid JSON body"), 400)
        except OdooError as exc:
            return self._json2_error(exc, JSON2_STATUS.get(exc.name, 500))
        return self._answer(result, fault)

    @staticmethod
    def _json2_error(exc: OdooError, status: int) -> Reply:
        body = {
            "name": exc.name,
            "message": exc.message,
            "arguments": [exc.message],
            "context": {},
            "debug": f"Traceback (most recent call last):\n  ...\n{exc.name}: {exc.message}\n",
        }
        return _json_reply(body, status)


_counter = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test run uses (for a shared real Odoo)."""
    return f"{prefix}-{secrets.token_hex(3)}-{next(_counter)}"
