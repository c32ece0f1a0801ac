"""The YAML schema of OPC UA sources. No asyncua import here, so checking a config never
loads the protocol stack.

A source is one server endpoint read either by subscription (the server pushes changes
every publishing interval) or by polling (one Read of every node each poll interval).
Node ids are written as ``ns=2;s=Line.Press1.Good``, ``i=2258`` or, preferably,
``nsu=<namespace uri>;s=...``: the namespace index is looked up at every connect, so a
server that renumbers its namespaces after a restart still works.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator

from agent.common.model import StrictModel
from agent.common.secrets import Secret
from agent.common.units import Duration, format_duration
from agent.config.common import Placement, PlacementError
from drivers.codecs import DataType

NODE_ID_PATTERN = r"^(nsu=[^;]+;|ns=\d+;)?(i=\d+|s=.+|g=[0-9A-Fa-f-]{36}|b=.+)$"
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class Mode(enum.StrEnum):
    SUBSCRIBE = "subscribe"
    POLL = "poll"


class SecurityPolicy(enum.StrEnum):
    NONE = "none"
    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128_Sha256_RsaOaep"
    AES256_SHA256_RSAPSS = "Aes256_Sha256_RsaPss"


class SecurityMode(enum.StrEnum):
    NONE = "none"
    SIGN = "sign"
    SIGN_AND_ENCRYPT = "sign_and_encrypt"


class DeadbandType(enum.StrEnum):
    ABSOLUTE = "absolute"
    PERCENT = "percent"


class OpcUaSecurityConfig(StrictModel):
    """How the secure channel is protected and which server certificate is trusted."""

    policy: SecurityPolicy = Field(
        default=SecurityPolicy.NONE,
        description="none | Basic256Sha256 | Aes128_Sha256_RsaOaep | Aes256_Sha256_RsaPss.",
    )
    mode: SecurityMode = Field(
        default=SecurityMode.NONE, description="none | sign | sign_and_encrypt."
    )
    certificate: Path | None = Field(
        default=None,
        description="Client certificate (DER or PEM). Default: generated on first start into "
        "<state_dir>/opcua/<source name>/ and printed with its thumbprint.",
    )
    private_key: Path | None = Field(
        default=None, description="Client private key (PEM or DER), with certificate."
    )
    application_uri: str | None = Field(
        default=None,
        description="Application URI written into the client certificate and the session; "
        "default urn:<hostname>:floorgate.",
    )
    server_certificate: Path | None = Field(
        default=None, description="The server certificate to trust (DER or PEM file)."
    )
    server_thumbprint: str | None = Field(
        default=None,
        description="Or: SHA-1 thumbprint (hex, colons allowed) of the server certificate "
        "to trust.",
    )

    @field_validator("server_thumbprint")
    @classmethod
    def _normalise_thumbprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = re.sub(r"[\s:]", "", value).upper()
        if not re.fullmatch(r"[0-9A-F]{40}", digits):
            raise ValueError("a SHA-1 thumbprint is 40 hex digits (colons allowed)")
        return digits

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.policy is SecurityPolicy.NONE) != (self.mode is SecurityMode.NONE):
            raise ValueError(
                "policy and mode go together: both none, or a policy with sign or sign_and_encrypt"
            )
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give both certificate and private_key, or neither (generated)")
        if self.policy is not SecurityPolicy.NONE and not (
            self.server_certificate or self.server_thumbprint
        ):
            raise ValueError(
                "a secured connection needs the server certificate to trust: set "
                "server_certificate (file) or server_thumbprint (see `floorgate opcua browse`)"
            )
        return self

    @property
    def secured(self) -> bool:
        return self.policy is not SecurityPolicy.NONE


class OpcUaSignalConfig(StrictModel):
    """One node read from the server."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Unique name of the signal across all sources; rules refer to it.",
    )
    node_id: str = Field(
        pattern=NODE_ID_PATTERN,
        description="nsu=<namespace uri>;s=..., ns=2;s=..., or i=... (see floorgate opcua browse).",
    )
    data_type: DataType | None = Field(
        default=None,
        description="Optional: the type rules may rely on (e.g. uint32 for a counter). A value "
        "of another kind is reported as a bad sample. Default: whatever the server sends.",
    )
    sampling_interval: Duration | None = Field(
        default=None,
        ge=0,
        description="How often the server samples the node. Default: the publishing interval.",
    )
    queue_size: int = Field(
        default=1, ge=1, le=10000, description="Changes the server keeps between publishes."
    )
    deadband: float | None = Field(
        default=None, ge=0, description="Only report a change larger than this (subscribe mode)."
    )
    deadband_type: DeadbandType = Field(
        default=DeadbandType.ABSOLUTE,
        description="absolute (engineering units) or percent (of the node's EURange).",
    )
    unit_of_measurement: str | None = Field(
        default=None, description="Engineering unit shown with samples (e.g. degC, bar)."
    )


class OpcUaConfig(StrictModel):
    type: Literal["opcua"]
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$", description="Unique source name.")
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="opc.tcp://host:port/path")
    mode: Mode = Field(default=Mode.SUBSCRIBE, description="subscribe | poll.")
    publishing_interval: Duration = Field(
        default=1.0, gt=0, description="Subscribe mode: how often the server sends changes."
    )
    keepalive_count: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Subscribe mode: publishing intervals without a change before the server "
        "sends a keep-alive.",
    )
    stale_after_intervals: int = Field(
        default=15,
        ge=2,
        le=100000,
        description="Subscribe mode: publishing intervals with neither a change nor a "
        "keep-alive after which the subscription is considered dead and re-created on the "
        "same session (once); silent as long again, a new session is opened.",
    )
    poll_interval: Duration = Field(default=1.0, gt=0, description="Poll mode: time between reads.")
    timeout: Duration = Field(default=5.0, gt=0, description="How long one request may take.")
    watchdog_interval: Duration = Field(
        default=10.0,
        gt=0,
        description="How often an idle connection is probed (a read of the server state).",
    )
    missing_node_retry: Duration = Field(
        default=60.0,
        gt=0,
        description="How often nodes that did not exist (or were refused) are looked for "
        "again while connected.",
    )
    backoff_max: Duration = Field(
        default=30.0, gt=0, description="Longest wait between reconnection attempts."
    )
    security: OpcUaSecurityConfig = Field(default_factory=OpcUaSecurityConfig)
    username: str | None = Field(default=None, description="User name; anonymous when unset.")
    password: Secret | None = Field(
        default=None, description="Password of username: {file: ...} or {credential: ...}."
    )
    signals: list[OpcUaSignalConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        seen: set[str] = set()
        for index, signal in enumerate(self.signals):
            if signal.name in seen:
                raise ValueError(f"signals[{index}].name {signal.name!r} is used twice")
            seen.add(signal.name)
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.stale_after_intervals <= self.keepalive_count:
            raise ValueError(
                f"stale_after_intervals ({self.stale_after_intervals}) must be larger than "
                f"keepalive_count ({self.keepalive_count}): a quiet server only sends a "
                "keep-alive every keepalive_count intervals"
            )
        return self

    # Machines made from a template (agent.config.templates): a template's node ids hold
    # {node} (the machine's node, e.g. ns=2;s=Line1.Press07) and/or {machine} (its name).
    PLACEMENT_KEYS: ClassVar[frozenset[str]] = frozenset({"node"})

    @classmethod
    def place_template_signal(cls, signal: dict[str, Any], placement: Placement) -> dict[str, Any]:
        node_id = signal.get("node_id")
        if node_id is None and "address" in signal:
            raise PlacementError(
                f"has a Modbus address and no node_id, and source {placement.source!r} is "
                "an OPC UA server: a template's signals are written for one kind of source",
                instance_key="source",
            )
        if not isinstance(node_id, str):
            return dict(signal)  # missing or not text: validation names it
        used = set(PLACEHOLDER.findall(node_id))
        if unknown := sorted(used - {"node", "machine"}):
            raise PlacementError(
                f"unknown placeholder {{{unknown[0]}}} in node_id; write {{node}} (the "
                "machine's node) or {machine} (the machine's name)",
                signal_key="node_id",
            )
        if not used:
            raise PlacementError(
                "node_id holds neither {node} nor {machine}: every machine made from the "
                "template would read the same node",
                signal_key="node_id",
            )
        if "node" in used and placement.node is None:
            raise PlacementError(
                f"node_id {node_id!r} needs the machine's node, and machine "
                f'{placement.machine!r} gives none (e.g. node: "ns=2;s=Line1.{placement.machine}")',
                instance_key="node",
            )
        placed = dict(signal)
        placed["node_id"] = node_id.replace("{node}", placement.node or "").replace(
            "{machine}", placement.machine
        )
        return placed

    @property
    def stale_after(self) -> float:
        """Seconds of silence (no change, no keep-alive) before the subscription is re-created
        (and as long again before the session is)."""
        return self.publishing_interval * self.stale_after_intervals

    def summary(self) -> str:
        """One line for `floorgate check-config`: what is read, from where, how."""
        if self.mode is Mode.SUBSCRIBE:
            how = f"subscribe every {format_duration(self.publishing_interval)}"
        else:
            how = f"poll every {format_duration(self.poll_interval)}"
        security = self.security
        secured = (
            f"{security.policy.value}/{security.mode.value}" if security.secured else "no security"
        )
        user = f"user {self.username}" if self.username else "anonymous"
        return f"opcua {self.endpoint}, {how}, {secured}, {user}, {len(self.signals)} signals"
