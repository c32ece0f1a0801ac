"""Odoo's two external APIs behind one ``call(model, method, ids=..., **named)``.

- JSON-2 (Odoo 19+): ``POST /json/2/<model>/<method>`` with a bearer API key and the
  named arguments as the body; errors are HTTP 4xx/5xx with ``{"name", "message", ...}``.
- JSON-RPC (Odoo 14-21): ``POST /jsonrpc`` ``execute_kw(db, uid, key, model, method,
  [ids], named)``; errors come back as **HTTP 200** with ``error.data.name``.

Errors are classified by the exception name Odoo sends, never by its message text
(which changes with the build and the language), into the forwarder's four kinds:

- ``odoo.exceptions.AccessDenied``, JSON-2 401, a false ``authenticate``: ``Fatal``.
- serialization failures, deadlocks, ``psycopg2.OperationalError`` (database down or a
  wrong database name), HTTP 5xx/429, an HTML page or a truncated body where JSON was
  expected, timeouts, dropped connections: ``Transient``.
- connection refused, DNS, TLS: ``NotConnected``.
- every other Odoo exception (ValidationError, UserError, MissingError, AccessError,
  ValueError, ...) and JSON-2 4xx: ``CallRejected`` (a ``Rejected``) carrying the name.

httpx is used only in this module; its exceptions never leave it.
"""

from __future__ import annotations

import itertools
import re
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

import agent
from agent.forwarders.base import Fatal, NotConnected, Rejected, Transient
from agent.forwarders.httpcall import bounded
from agent.forwarders.odoo.config import OdooProtocol

TRANSIENT_NAMES = frozenset(
    {
        "psycopg2.errors.SerializationFailure",
        "psycopg2.errors.DeadlockDetected",
        "psycopg2.errors.LockNotAvailable",
        "psycopg2.OperationalError",
        "psycopg2.errors.OperationalError",
    }
)
ACCESS_DENIED = "odoo.exceptions.AccessDenied"

# JSON-RPC binds named arguments to each model's own override, and overrides rename
# them (``mrp.workorder.write(self, values)`` refuses ``vals=``), and Odoo 18's dispatcher
# reads ``args[0]`` of ``create`` to tell one record from many. So over JSON-RPC the
# leading arguments of these methods travel positionally, in this order; JSON-2 takes
# names by design (its names are the base model's, which is what callers use here).
POSITIONAL: dict[str, tuple[str, ...]] = {
    "create": ("vals_list",),
    "write": ("vals",),
    "load": ("fields", "data"),
    "read": ("fields",),
    "search_read": ("domain", "fields"),
    "search": ("domain",),
    "search_count": ("domain",),
}
MESSAGE_CHARS = 400


def major_version(version: str) -> int:
    """19 for "19.0", "saas~18.3" -> 18; 0 when there is no number."""
    match = re.search(r"(\d+)(?:\.|$)", version)
    return int(match.group(1)) if match else 0


class CallRejected(Rejected):
    """Odoo refused the call; ``error_name`` is the exception class Odoo named."""

    def __init__(self, message: str, error_name: str) -> None:
        super().__init__(message)
        self.error_name = error_name


def _short(text: str, limit: int = MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _html_hint(response: httpx.Response) -> str:
    text = response.content[:2000].decode("utf-8", errors="replace")
    lowered = text.lower()
    start, end = lowered.find("<title>"), lowered.find("</title>")
    if 0 <= start < end:
        text = text[start + 7 : end]
    # A proxy's bare 502 has no body: say so rather than end the text on a colon.
    return _short(text, 120) or "empty answer"


def _said(message: str) -> str:
    """Odoo's message, or words for its absence (some exceptions are raised bare)."""
    return _short(message) or "no message from Odoo"


class OdooTransport:
    """One kept-alive connection to one Odoo database."""

    def __init__(
        self,
        *,
        url: str,
        database: str,
        api_key: str,
        protocol: OdooProtocol,
        login: str | None,
        timeout: float,
        ca_file: Path | None = None,
        where: str = "odoo",
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.where = where
        self.protocol = protocol
        self.server_version: str | None = None
        self.uid: int | None = None
        self.user_context: dict[str, Any] = {}
        self.calls = 0
        self._key = api_key
        self._login = login
        self._timeout = timeout
        self._ca_file = ca_file
        self._ids = itertools.count(1)
        self._client: httpx.AsyncClient | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Open the connection, pick the protocol and check the key."""
        await self.close()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout),
            verify=self._verify(),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers={"User-Agent": f"floorgate/{getattr(agent, '__version__', '0')}"},
        )
        try:
            await self._choose_protocol()
            if self.protocol is OdooProtocol.JSONRPC:
                await self._authenticate()
            # Proves the key works on JSON-2 too, and tells the user's timezone.
            context = await self.call("res.users", "context_get")
            self.user_context = context if isinstance(context, dict) else {}
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _verify(self) -> ssl.SSLContext | bool:
        if self._ca_file is None:
            return True
        try:
            return ssl.create_default_context(cafile=str(self._ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise Fatal(f"{self.where}: cannot load ca_file {self._ca_file}: {reason}") from None

    async def _choose_protocol(self) -> None:
        if self.protocol is not OdooProtocol.JSONRPC:
            response = await self._request("GET", "/web/version")
            version = self._json_or_none(response) if response.status_code == 200 else None
            if isinstance(version, dict):
                self.server_version = str(version.get("version", "?"))
                if self.protocol is OdooProtocol.JSON2 or major_version(self.server_version) >= 19:
                    self.protocol = OdooProtocol.JSON2
                    return
            elif self.protocol is OdooProtocol.JSON2:
                raise Fatal(
                    f"{self.where}: server does not offer JSON-2 (GET /web/version answered "
                    f"HTTP {response.status_code}); it needs Odoo 19+, or set protocol: jsonrpc"
                )
        self.protocol = OdooProtocol.JSONRPC
        version = await self._jsonrpc("common", "version", [])
        if isinstance(version, dict):
            self.server_version = str(version.get("server_version", "?"))

    async def _authenticate(self) -> None:
        if not self._login:
            raise Fatal(f"{self.where}: JSON-RPC (Odoo before 19) needs `login:` in the config")
        uid = await self._jsonrpc(
            "common", "authenticate", [self.database, self._login, self._key, {}]
        )
        if not isinstance(uid, int) or isinstance(uid, bool):
            raise Fatal(
                f"{self.where}: authentication refused for login {self._login!r} "
                f"on database {self.database!r}: check the API key (it may have expired)"
            )
        self.uid = uid

    async def key_expiry(self) -> datetime | None:
        """The earliest expiry of the user's API keys (Odoo 18+ lets keys expire; keys of
        non-admin users must). None when no key expires or Odoo does not say."""
        try:
            rows = await self.call(
                "res.users.apikeys", "search_read", domain=[], fields=["expiration_date"]
            )
        except Rejected:  # older Odoo, or the user may not read it: nothing to warn about
            return None
        dates = [
            datetime.strptime(str(r["expiration_date"]), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            for r in rows or []
            if r.get("expiration_date")
        ]
        return min(dates, default=None)

    # -- calls -------------------------------------------------------------------------

    async def call(
        self,
        model: str,
        method: str,
        *,
        ids: list[int] | None = None,
        context: dict[str, Any] | None = None,
        **named: Any,
    ) -> Any:
        """Call ``model.method`` on the records ``ids`` with named arguments (the base
        model's names; see ``POSITIONAL`` for how they travel over JSON-RPC)."""
        if self._client is None:
            raise NotConnected(f"{self.where}: not connected")
        self.calls += 1
        if context is not None:
            named["context"] = context
        if self.protocol is OdooProtocol.JSON2:
            return await self._json2(model, method, ids, named)
        args: list[Any] = [] if ids is None else [ids]
        for name in POSITIONAL.get(method, ()):
            if name not in named:
                break
            args.append(named.pop(name))
        assert self.uid is not None
        return await self._jsonrpc(
            "object",
            "execute_kw",
            [self.database, self.uid, self._key, model, method, args, named],
            what=f"{model}.{method}",
        )

    async def _json2(
        self, model: str, method: str, ids: list[int] | None, named: dict[str, Any]
    ) -> Any:
        body = dict(named)
        if ids is not None:
            body["ids"] = ids
        headers = {
            "Authorization": f"bearer {self._key}",
            "Content-Type": "application/json",
            "X-Odoo-Database": self.database,
        }
        response = await self._request(
            "POST", f"/json/2/{model}/{method}", content=orjson.dumps(body), headers=headers
        )
        what = f"{model}.{method}"
        if response.status_code == 200:
            return self._json(response, what)
        self._raise_json2(response, what)

    def _raise_json2(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        payload = self._json_or_none(response)
        name = str(payload.get("name", "")) if isinstance(payload, dict) else ""
        message = str(payload.get("message", "")) if isinstance(payload, dict) else ""
        if status == 401 or name == ACCESS_DENIED:
            raise Fatal(
                f"{self.where}: {what}: HTTP {status} {name or 'access denied'}: the API key "
                f"is wrong or expired ({_said(message)})"
            )
        if name:
            self._raise_named(name, message, what)
        if status == 429 or status >= 500:
            raise Transient(f"{self.where}: {what}: HTTP {status}: {_html_hint(response)}")
        raise CallRejected(f"{what}: HTTP {status}: {_html_hint(response)}", f"HTTP {status}")

    async def _jsonrpc(self, service: str, method: str, args: list[Any], what: str = "") -> Any:
        body = {
            "jsonrpc": "2.0",
            "method": "call",
            "id": next(self._ids),
            "params": {"service": service, "method": method, "args": args},
        }
        what = what or f"{service}.{method}"
        response = await self._request(
            "POST",
            "/jsonrpc",
            content=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        status = response.status_code
        if status == 404:
            raise Fatal(
                f"{self.where}: the server has no /jsonrpc (Odoo 22 removed it): set protocol: "
                "json2"
            )
        if status != 200:
            kind = Transient if status == 429 or status >= 500 else Rejected
            raise kind(f"{self.where}: {what}: HTTP {status}: {_html_hint(response)}")
        payload = self._json(response, what)
        if not isinstance(payload, dict):
            raise Transient(f"{self.where}: {what}: answer is not a JSON-RPC object")
        error = payload.get("error")
        if isinstance(error, dict):
            data = error.get("data") if isinstance(error.get("data"), dict) else {}
            assert isinstance(data, dict)
            name = str(data.get("name") or "")
            message = str(data.get("message") or error.get("message") or "")
            self._raise_named(name or "unknown", message, what)
        return payload.get("result")

    def _raise_named(self, name: str, message: str, what: str) -> None:
        text = f"{what}: {name}: {_said(message)}"
        if name == ACCESS_DENIED:
            raise Fatal(f"{self.where}: {text} (the API key is wrong or expired)")
        if name in TRANSIENT_NAMES:
            hint = ""
            if "OperationalError" in name:
                hint = f" (database unreachable, or the database name {self.database!r} is wrong)"
            raise Transient(f"{self.where}: {text}{hint}")
        if name.startswith(("odoo.", "builtins.", "psycopg2.errors.", "werkzeug.exceptions.")):
            raise CallRejected(text, name)
        raise Transient(f"{self.where}: unexpected error {text}")

    # -- HTTP --------------------------------------------------------------------------

    async def _request(self, verb: str, path: str, **kwargs: Any) -> httpx.Response:
        assert self._client is not None
        # The forwarder's ``where`` already names the server; the CLI's does not.
        target = path if self.url in self.where else self.url + path
        return await bounded(
            self._client.request(verb, self.url + path, **kwargs),
            self._timeout,
            f"{self.where}: {verb} {target}",
        )

    def _json(self, response: httpx.Response, what: str = "") -> Any:
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            kind = response.headers.get("Content-Type", "?")
            hint = _html_hint(response)
            raise Transient(
                f"{self.where}: {what or response.request.url.path}: HTTP "
                f"{response.status_code} answer is not JSON ({kind}, {len(response.content)} "
                f"bytes: {hint!r}); a proxy error page or a truncated answer"
            ) from None

    @staticmethod
    def _json_or_none(response: httpx.Response) -> Any:
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return None
