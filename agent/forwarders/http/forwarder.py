"""HTTP middleware destination: each batch of CloudEvents is one POST.

The request
-----------
``POST <url>`` with the body ``[<event>,<event>,...]`` — the buffered CloudEvent JSON
payloads joined as they are (never re-serialised) — and these headers:

- ``Content-Type: application/cloudevents-batch+json``
- ``User-Agent: floorgate/<version>``
- ``Idempotency-Key``: sha256 hex of the batch's event ids joined by ``\\n``. The same
  batch sent again carries the same key; every event also keeps its CloudEvent ``id``
  through every retry, so a receiver can drop repeats either way.
- ``auth: bearer``: ``Authorization: Bearer <token>``.
- ``auth: hmac``: ``X-Floorgate-Timestamp: <unix seconds>`` and
  ``X-Floorgate-Signature: sha256=<hex>``, where ``<hex>`` is the HMAC-SHA256, keyed with
  the configured secret (UTF-8), of the timestamp, a dot and the raw body bytes. A
  receiver verifies it like this (and should refuse timestamps more than a few minutes
  from its own clock, against replays)::

      expected = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
      ok = hmac.compare_digest("sha256=" + expected, signature_header)

What the answer means
---------------------
- 2xx: every event delivered. 409: delivered too (the receiver already had them).
- 408, 425, 429, 5xx: ``Transient``, honouring ``Retry-After`` (seconds or an HTTP-date,
  capped at one hour).
- 401, 403: ``Fatal`` — the token or key is wrong or expired; retrying or dead-lettering
  events would not help, a person must act.
- 3xx: ``Fatal`` — redirects are not followed (a POST body must not wander off); fix
  ``url``.
- any other 4xx: ``Rejected`` with ``HTTP <code>: <start of the response text>``.
- connection refused, DNS failure, TLS handshake or certificate failure, connect timeout:
  ``NotConnected``. Other timeouts: ``Transient``. Any other transport failure (the
  connection dropped mid-request, a protocol error): ``Transient``.

httpx is used only in this module; its exceptions never leave it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
import time
from collections.abc import Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime

import certifi
import httpx

import agent
from agent.common.secrets import SecretError, read_secret
from agent.forwarders.base import Fatal, NotConnected, Rejected, SendResult, Transient
from agent.forwarders.http.config import HttpAuth, HttpDestinationConfig
from agent.forwarders.httpcall import bounded
from buffer.rows import ClaimedEvent

log = logging.getLogger("floorgate.forwarders.http")

CONTENT_TYPE = "application/cloudevents-batch+json"
MAX_RETRY_AFTER = 3600.0  # a destination asking for more than an hour is capped to one
REJECT_TEXT_CHARS = 500
_TRANSIENT_STATUSES = frozenset({408, 425, 429})


def user_agent() -> str:
    return f"floorgate/{getattr(agent, '__version__', '0')}"


def idempotency_key(batch: Sequence[ClaimedEvent]) -> str:
    """sha256 hex of the event ids joined by newlines: same batch, same key."""
    return hashlib.sha256("\n".join(event.id for event in batch).encode()).hexdigest()


def batch_body(batch: Sequence[ClaimedEvent]) -> bytes:
    """The JSON array of the payloads, joined as they are (no re-serialisation)."""
    return b"[" + b",".join(event.payload for event in batch) + b"]"


def sign(key: str, timestamp: str, body: bytes) -> str:
    """The ``X-Floorgate-Signature`` value for a body sent at ``timestamp``."""
    digest = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP-date).

    Capped at ``MAX_RETRY_AFTER``; a date in the past gives 0; anything else gives None.
    """
    if value is None or not (text := value.strip()):
        return None
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no claim about the local zone
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    delay = when.timestamp() - current
    return min(max(delay, 0.0), MAX_RETRY_AFTER)


def _safe_url(url: str) -> str:
    """The URL without any user:password part, for messages."""
    return str(httpx.URL(url).copy_with(userinfo=b""))


def _text_start(response: httpx.Response, limit: int = REJECT_TEXT_CHARS) -> str:
    try:
        text = response.text
    except (UnicodeDecodeError, LookupError):
        text = response.content.decode("utf-8", errors="replace")
    return text[:limit].strip()


class WebhookForwarder:
    """Sends batches to an HTTP middleware over one kept-alive connection pool."""

    def __init__(self, config: HttpDestinationConfig) -> None:
        self.name = config.name
        self._config = config
        self._url = _safe_url(config.url)
        # Starts every error text: which destination, and the request that failed.
        self._where = f"destination {self.name}: POST {self._url}"
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._ssl_context: ssl.SSLContext | None = None

    async def connect(self) -> None:
        """Read the token and open the client. Reading again picks up a rotated token."""
        await self.close()
        config = self._config
        token = None
        if config.auth is not HttpAuth.NONE:
            assert config.token is not None  # the config model guarantees it
            try:
                token = read_secret(config.token)
            except SecretError as exc:
                raise Fatal(f"destination {self.name}: {config.auth.value} token: {exc}") from None
        self._token = token
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout),
            verify=self._verify(),
            follow_redirects=False,
            headers={"User-Agent": user_agent()},
        )
        log.debug("destination=%s connected url=%s auth=%s", self.name, self._url, config.auth)

    def _verify(self) -> ssl.SSLContext:
        # Built once per forwarder: loading a CA bundle costs 50-200 ms, paid at every
        # reconnect otherwise.
        if self._ssl_context is None:
            self._ssl_context = self._build_ssl_context()
        return self._ssl_context

    def _build_ssl_context(self) -> ssl.SSLContext:
        if not self._url.startswith("https://"):
            # Never used for a plain-http URL; a verifying context with no CA loaded, so
            # it could not accept any certificate if it ever were.
            return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca_file = self._config.ca_file
        if ca_file is None:
            return ssl.create_default_context(cafile=certifi.where())  # httpx's default trust
        try:
            return ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            message = f"destination {self.name}: cannot load ca_file {ca_file}: {reason}"
            raise Fatal(message) from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def send(self, batch: Sequence[ClaimedEvent]) -> SendResult:
        if not batch:
            return SendResult()
        if self._client is None:
            raise NotConnected(f"destination {self.name}: not connected")
        body = batch_body(batch)
        response = await self._post(self._client, body, self._headers(batch, body))
        self._check(response)
        return SendResult(delivered=[event.seq for event in batch])

    def _headers(self, batch: Sequence[ClaimedEvent], body: bytes) -> dict[str, str]:
        headers = {"Content-Type": CONTENT_TYPE, "Idempotency-Key": idempotency_key(batch)}
        if self._token is not None and self._config.auth is HttpAuth.BEARER:
            headers["Authorization"] = f"Bearer {self._token}"
        elif self._token is not None and self._config.auth is HttpAuth.HMAC:
            timestamp = str(int(time.time()))
            headers["X-Floorgate-Timestamp"] = timestamp
            headers["X-Floorgate-Signature"] = sign(self._token, timestamp, body)
        return headers

    async def _post(
        self, client: httpx.AsyncClient, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        """POST within the whole-request timeout, httpx failures mapped to our four kinds."""
        return await bounded(
            client.post(self._config.url, content=body, headers=headers),
            self._config.timeout,
            self._where,
        )

    def _check(self, response: httpx.Response) -> None:
        """Return when the batch was delivered; raise the right kind otherwise."""
        status = response.status_code
        if 200 <= status < 300 or status == 409:
            return
        where = self._where
        text = _text_start(response)
        # The answer's own words when it has some; an empty body adds nothing after a colon.
        said = f": {text[:200]}" if text else " (empty answer)"
        if status in _TRANSIENT_STATUSES or 500 <= status < 600:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            hint = "" if retry_after is None else f" (retry after {retry_after:g}s)"
            raise Transient(f"{where}: HTTP {status}{hint}{said}", retry_after)
        if status in (401, 403):
            auth = self._config.auth.value
            said = f": {text}" if text else ""
            raise Fatal(f"{where}: HTTP {status}, check the {auth} token/key{said}")
        if 300 <= status < 400:
            location = response.headers.get("Location", "?")
            raise Fatal(f"{where}: HTTP {status} redirect to {location}; set url to the target")
        if 400 <= status < 500:
            raise Rejected(f"HTTP {status}: {text}" if text else f"HTTP {status}")
        raise Transient(f"{where}: unexpected HTTP {status}{said}")
