"""asyncua exceptions translated into driver errors with a message a plant engineer can act
on. The one place that knows which status codes mean "fix the password" or "trust the
certificate"."""

from __future__ import annotations

import asyncio

from asyncua import ua

from agent.common.errors import Words
from agent.common.errors import describe as describe_error
from drivers.base import DriverError, NotConnected

_USER_REFUSED = {
    ua.StatusCodes.BadUserAccessDenied,
    ua.StatusCodes.BadIdentityTokenRejected,
    ua.StatusCodes.BadIdentityTokenInvalid,
    ua.StatusCodes.BadUserSignatureInvalid,
}
_CLIENT_CERT_REFUSED = {
    ua.StatusCodes.BadCertificateUntrusted,
    ua.StatusCodes.BadSecurityChecksFailed,
    ua.StatusCodes.BadCertificateInvalid,
    ua.StatusCodes.BadCertificateUriInvalid,
    ua.StatusCodes.BadCertificateUseNotAllowed,
    ua.StatusCodes.BadCertificateTimeInvalid,
    ua.StatusCodes.BadCertificateRevoked,
    ua.StatusCodes.BadSecurityPolicyRejected,
}


class AccessRefused(DriverError):
    """The server refused this client's identity: a person must fix credentials or trust."""


# What asyncua's bare exceptions (a reset socket, a closed stream) mean to an OPC UA
# client; agent.common.errors has the general ones (a timeout, a refused connection).
_WORDS: Words = (
    (ConnectionResetError, "connection closed by the server"),
    (BrokenPipeError, "connection closed by the server"),
    (EOFError, "connection closed by the server"),
    (ConnectionRefusedError, "connection refused: no OPC UA server listening"),
)


def describe(exc: BaseException) -> str:
    """The exception in words, never empty: "message (Type)" (agent.common.errors)."""
    return describe_error(exc, words=_WORDS)


def translate(
    exc: BaseException, *, endpoint: str, username: str | None, client_thumbprint: str | None
) -> DriverError:
    """The driver error for an exception raised while talking to ``endpoint``."""
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, ua.UaStatusCodeError):
        code = exc.code
        name = ua.StatusCode(code).name
        if code in _USER_REFUSED:
            if not username:
                return AccessRefused(
                    f"{endpoint} refused anonymous access: set username and password ({name})"
                )
            return AccessRefused(
                f"{endpoint} refused user {username!r}: wrong user name or password, or the "
                f"user is not allowed ({name})"
            )
        if code in _CLIENT_CERT_REFUSED:
            cert = f" (thumbprint {client_thumbprint})" if client_thumbprint else ""
            return AccessRefused(
                f"{endpoint} does not accept this client's certificate{cert}: trust it on the "
                f"server ({name})"
            )
        return NotConnected(f"{endpoint}: {name}")
    if isinstance(exc, ua.UaError) and "certificate mismatch" in str(exc).lower():
        return AccessRefused(
            f"{endpoint} presented a certificate that is not the configured server_certificate"
        )
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return NotConnected(f"{endpoint}: no answer in time")
    if isinstance(exc, OSError | ConnectionError | EOFError):
        # (`exc or ...` would not help: an exception is always true, even without text)
        return NotConnected(f"cannot reach {endpoint}: {describe(exc)}")
    return NotConnected(f"{endpoint}: {describe(exc)}")
