"""An Odoo stand-in: a real HTTP server (aiohttp) speaking both of Odoo's external APIs
with the request and error shapes of a real Odoo (see /work/shared/ODOO.md).

- ``POST /jsonrpc``: ``common.version``, ``common.authenticate`` (uid, or ``false``),
  ``object.execute_kw``. Errors are **HTTP 200** with ``error.data.name``; a body that is
  not JSON-RPC gets HTTP 400 HTML.
- ``POST /json/2/<model>/<method>`` (when ``json2=True``): bearer key,
  ``X-Odoo-Database``; the bare JSON result, or 401 / 404 / 422 / 500 with
  ``{"name", "message", "arguments", "context", "debug"}``.
- ``GET /web/version`` (JSON-2 servers only, no key).

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
import secrets
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web

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
        self._runner: web.AppRunner | None = None
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
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/jsonrpc", self._jsonrpc)
        app.router.add_post("/json/2/{model}/{method}", self._json2)
        app.router.add_get("/web/version", self._version)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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
    def _html(status: int) -> web.Response:
        reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        text = HTML_ERROR.format(status=status, reason=reason.get(status, "Error"))
        return web.Response(status=status, text=text, content_type="text/html")

    # -- JSON-RPC ----------------------------------------------------------------------

    async def _jsonrpc(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        fault = self._take_fault()
        if fault is not None and fault.kind == "status":
            return self._html(fault.status)
        try:
            body = orjson.loads(await request.read())
            params = body["params"]
            service, method, args = params["service"], params["method"], params.get("args", [])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.Response(
                status=400, text="<html>Bad Request</html>", content_type="text/html"
            )
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

    def _answer(self, payload: Any, fault: _Fault | None, status: int = 200) -> web.Response:
        data = orjson.dumps(payload)
        if fault is not None and fault.kind == "truncate":
            data = data[: max(1, len(data) // 2)]
        return web.Response(status=status, body=data, content_type="application/json")

    def _rpc_error(self, request_id: Any, exc: OdooError) -> web.Response:
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

    async def _version(self, request: web.Request) -> web.Response:
        if not self.json2:
            return web.Response(status=404, text="<html>Not Found</html>", content_type="text/html")
        major = int(self.version.split(".")[0])
        return web.json_response(
            {"version_info": [major, 0, 0, "final", 0, ""], "version": self.version}
        )

    async def _json2(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.json2:
            return web.Response(status=404, text="<html>Not Found</html>", content_type="text/html")
        fault = self._take_fault()
        if fault is not None and fault.kind == "status":
            return self._html(fault.status)
        auth = request.headers.get("Authorization", "")
        key = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else ""
        if key not in self._keys:
            self.denied += 1
            return self._json2_error(OdooError(ACCESS_DENIED, "Access Denied"), 401)
        database = request.headers.get("X-Odoo-Database", self.database)
        try:
            self._check_database(database)
            body = orjson.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise OdooError("builtins.TypeError", "the body must be a JSON object")
            if fault is not None and fault.kind == "error":
                raise OdooError(fault.name, fault.message)
            model, method = request.match_info["model"], request.match_info["method"]
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
    def _json2_error(exc: OdooError, status: int) -> web.Response:
        body = {
            "name": exc.name,
            "message": exc.message,
            "arguments": [exc.message],
            "context": {},
            "debug": f"Traceback (most recent call last):\n  ...\n{exc.name}: {exc.message}\n",
        }
        return web.json_response(body, status=status)


_counter = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test run uses (for a shared real Odoo)."""
    return f"{prefix}-{secrets.token_hex(3)}-{next(_counter)}"
