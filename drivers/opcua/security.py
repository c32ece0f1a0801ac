"""Secure channel setup for OPC UA sources: client certificate, server trust, user identity.

The client certificate and key come from configured files or are generated once into
``<state_dir>/opcua/<source>/`` (carrying the application URI the session announces) and
logged with their SHA-1 thumbprint, which is what server administrators compare when they
move the certificate from "rejected" to "trusted".

The server is trusted by a configured certificate file or thumbprint, never on first
use: with a thumbprint, the certificate offered by the server's endpoint list is checked
against it before anything secret is sent. There is no fallback to an unsecured
channel: if the wanted policy and mode are not offered, connecting fails and health says
why.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent.common.secrets import Secret, SecretError, read_secret
from drivers.base import DriverError
from drivers.opcua.config import (
    OpcUaConfig,
    SecurityMode,
    SecurityPolicy,
)

log = logging.getLogger("floorgate.drivers.opcua")

POLICY_CLASSES: dict[SecurityPolicy, type[security_policies.SecurityPolicy]] = {
    SecurityPolicy.BASIC256SHA256: security_policies.SecurityPolicyBasic256Sha256,
    SecurityPolicy.AES128_SHA256_RSAOAEP: security_policies.SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicy.AES256_SHA256_RSAPSS: security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {
    SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
    SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}


class SecuritySetupError(DriverError):
    """Security cannot be set up as configured (files, trust, offered endpoints)."""


def thumbprint(der: bytes) -> str:
    """SHA-1 of the DER certificate, as OPC UA servers show it (hex pairs, colons)."""
    return format_thumbprint(hashlib.sha1(der, usedforsecurity=False).hexdigest())


def format_thumbprint(digits: str) -> str:
    """Any thumbprint text (with or without colons, any case) the one way this agent
    prints them: uppercase hex pairs joined by colons. Two thumbprints shown side by side
    in one message must be comparable by eye."""
    plain = digits.replace(":", "").replace(" ", "").upper()
    return ":".join(plain[i : i + 2] for i in range(0, len(plain), 2))


def read_password(ref: Secret) -> str:
    """The password, read at every attempt (a fixed file is picked up without a restart);
    read through agent.common.secrets so the log formatter masks it."""
    try:
        return read_secret(ref)
    except SecretError as exc:
        raise SecuritySetupError(f"cannot read password: {exc}") from None


def default_application_uri() -> str:
    return f"urn:{socket.gethostname()}:floorgate"


@dataclass(frozen=True)
class ClientIdentity:
    certificate: Path
    private_key: Path
    thumbprint: str


async def client_identity(config: OpcUaConfig, client: Client, state_dir: Path) -> ClientIdentity:
    """The configured certificate and key, or the generated pair (created on first use)."""
    security = config.security
    if security.certificate is not None and security.private_key is not None:
        cert_path, key_path = security.certificate, security.private_key
    else:
        folder = state_dir / "opcua" / config.name
        cert_path, key_path = folder / "client_cert.der", folder / "client_key.pem"
        before = cert_path.read_bytes() if cert_path.is_file() else None
        try:
            # The folder is private before the key is written into it.
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            # asyncua also regenerates a certificate that no longer matches (application
            # URI, host name, expiry): a new one is announced like a first one.
            await client.setup_self_signed_certificate(key_path, cert_path)
            key_path.chmod(0o600)
        except OSError as exc:
            raise SecuritySetupError(
                f"cannot write client certificate in {folder}: {exc}"
            ) from None
        if cert_path.read_bytes() != before:
            print_new_certificate(config.name, cert_path, client.application_uri)
    try:
        cert = await uacrypto.load_certificate(cert_path)
    except (OSError, ValueError) as exc:
        raise SecuritySetupError(f"cannot load client certificate {cert_path}: {exc}") from None
    return ClientIdentity(cert_path, key_path, thumbprint(cert.public_bytes(Encoding.DER)))


def print_new_certificate(source: str, cert_path: Path, application_uri: str) -> None:
    der = cert_path.read_bytes()
    log.warning(
        "opcua client certificate generated source=%s path=%s thumbprint=%s "
        "application_uri=%s: trust it on the server",
        source,
        cert_path,
        thumbprint(der),
        application_uri,
    )


async def server_certificate(config: OpcUaConfig, client: Client) -> bytes:
    """DER of the server certificate to trust: the configured file, or the one the server
    offers for the wanted policy and mode if it matches the configured thumbprint."""
    security = config.security
    policy = POLICY_CLASSES[security.policy]
    if security.server_certificate is not None:
        try:
            cert = await uacrypto.load_certificate(security.server_certificate)
        except (OSError, ValueError) as exc:
            raise SecuritySetupError(
                f"cannot load server_certificate {security.server_certificate}: {exc}"
            ) from None
        return bytes(cert.public_bytes(Encoding.DER))
    endpoints = await client.connect_and_get_server_endpoints()
    try:
        endpoint = Client.find_endpoint(endpoints, MODES[security.mode], policy.URI)
    except ua.UaError:
        offered = sorted(
            {f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e in endpoints}
        )
        raise SecuritySetupError(
            f"the server offers no endpoint with {security.policy.value}/{security.mode.value}"
            f" (offered: {', '.join(offered)})"
        ) from None
    der = first_certificate(endpoint.ServerCertificate or b"")
    presented = thumbprint(der)
    configured = format_thumbprint(security.server_thumbprint or "")
    if presented != configured:
        raise SecuritySetupError(
            f"server certificate not trusted: its thumbprint is {presented}, the "
            f"configured server_thumbprint is {configured}"
        )
    return der


def first_certificate(der_chain: bytes) -> bytes:
    """A server may send its certificate followed by its chain: keep the first one."""
    try:
        return bytes(x509.load_der_x509_certificate(der_chain).public_bytes(Encoding.DER))
    except ValueError:
        length = int.from_bytes(der_chain[2:4], "big") + 4
        return der_chain[:length]


async def apply_security(config: OpcUaConfig, client: Client, state_dir: Path) -> str | None:
    """Configure ``client`` (before connect). Returns the client certificate thumbprint when
    the channel is secured, for error messages that tell the engineer what to trust."""
    security = config.security
    client.application_uri = security.application_uri or default_application_uri()
    client.name = client.description = f"floorgate {config.name}"
    if config.username is not None and config.password is not None:
        client.set_user(config.username)
        client.set_password(read_password(config.password))
    if not security.secured:
        return None
    identity = await client_identity(config, client, state_dir)
    server_der = await server_certificate(config, client)
    try:
        await client.set_security(
            POLICY_CLASSES[security.policy],
            identity.certificate,
            identity.private_key,
            server_certificate=server_der,
            mode=MODES[security.mode],
        )
    except (OSError, ValueError) as exc:
        raise SecuritySetupError(f"cannot load client certificate or key: {exc}") from None
    return identity.thumbprint
