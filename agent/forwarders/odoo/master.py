"""Master data: work centers, losses, equipment and products, looked up by code or name
and cached.

A reference that Odoo does not have (or has twice) is a configuration problem, not a bad
event: ``resolve`` returns a ``Lookup`` saying found / missing / ambiguous, the events
that need it wait, and the next attempt re-reads Odoo (at most once per
``MISS_REFRESH`` seconds), so fixing Odoo un-blocks them without a restart. Everything
is re-read every ``master_refresh`` anyway (renamed or archived records).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.forwarders.base import Rejected
from agent.forwarders.odoo.transport import OdooTransport

MISS_REFRESH = 10.0


class Kind(enum.StrEnum):
    WORK_CENTER = "work center"
    LOSS = "loss"
    EQUIPMENT = "equipment"
    PRODUCT = "product"


# model, the fields read, the fields a reference may match (in order of preference)
SOURCES: dict[Kind, tuple[str, list[str], tuple[str, ...]]] = {
    Kind.WORK_CENTER: ("mrp.workcenter", ["name", "code"], ("code", "name")),
    Kind.LOSS: ("mrp.workcenter.productivity.loss", ["name", "loss_type"], ("name",)),
    Kind.EQUIPMENT: ("maintenance.equipment", ["name", "serial_no"], ("serial_no", "name")),
    Kind.PRODUCT: ("product.product", ["name", "default_code"], ("default_code", "name")),
}


# Odoo's record rules hide some records from a user without a manager group.
VISIBILITY_HINTS = {
    Kind.EQUIPMENT: "; the integration user sees only equipment it follows, unless it has "
    "Maintenance / Equipment Manager",
}


# Read whole (a plant has tens of work centers and a handful of losses) or only the
# references the config names (a catalogue can hold many thousand products).
NARROW = frozenset({Kind.EQUIPMENT, Kind.PRODUCT})


@dataclass(frozen=True)
class Lookup:
    kind: Kind
    ref: str
    ids: tuple[int, ...]
    note: str = ""  # why nothing could be read (e.g. the model is not installed)

    @property
    def id(self) -> int | None:
        return self.ids[0] if len(self.ids) == 1 else None

    @property
    def status(self) -> str:
        if len(self.ids) == 1:
            return "found"
        return "ambiguous" if self.ids else "missing"

    def problem(self) -> str:
        """A sentence for health and logs."""
        model = SOURCES[self.kind][0]
        if self.note:
            return f"{self.kind.value} {self.ref!r}: {self.note}"
        if not self.ids:
            fields = " or ".join(SOURCES[self.kind][2])
            hint = VISIBILITY_HINTS.get(self.kind, "")
            return f"{self.kind.value} {self.ref!r} not found in Odoo ({model} by {fields}){hint}"
        return (
            f"{self.kind.value} {self.ref!r} is ambiguous in Odoo: {len(self.ids)} {model} "
            f"records (ids {', '.join(map(str, self.ids))})"
        )


class MasterData:
    """Cached tables of the master records the destination needs."""

    def __init__(self, transport: OdooTransport, refresh: float) -> None:
        self._transport = transport
        self._refresh = refresh
        self._rows: dict[Kind, list[dict[str, Any]]] = {}
        self._notes: dict[Kind, str] = {}
        self._loaded_at: dict[Kind, float] = {}
        self._wanted: dict[Kind, set[str]] = {kind: set() for kind in NARROW}
        self.loss_types: dict[int, str] = {}

    def use(self, transport: OdooTransport) -> None:
        """Keep the cache across reconnects; read through the new connection."""
        self._transport = transport

    async def resolve(self, kind: Kind, ref: str) -> Lookup:
        """Find ``ref``; a miss re-reads the table (rate-limited) before it is reported."""
        if kind in NARROW and ref not in self._wanted[kind]:
            self._wanted[kind].add(ref)
            await self._load(kind)
        await self._ensure(kind)
        lookup = self._find(kind, ref)
        stale = time.monotonic() - self._loaded_at.get(kind, 0.0) > MISS_REFRESH
        if lookup.status != "found" and stale:
            await self._load(kind)
            lookup = self._find(kind, ref)
        return lookup

    async def resolve_all(self, wanted: Iterable[tuple[Kind, str]]) -> list[Lookup]:
        return [await self.resolve(kind, ref) for kind, ref in wanted]

    async def _ensure(self, kind: Kind) -> None:
        age = time.monotonic() - self._loaded_at.get(kind, float("-inf"))
        if age > self._refresh:
            await self._load(kind)

    async def _load(self, kind: Kind) -> None:
        model = SOURCES[kind][0]
        self._loaded_at[kind] = time.monotonic()
        try:
            rows = await self._read(kind)
        except Rejected as exc:  # e.g. maintenance not installed: a config problem
            self._rows[kind] = []
            self._notes[kind] = f"cannot read {model}: {exc}"
            return
        self._notes.pop(kind, None)
        self._rows[kind] = rows
        if kind is Kind.LOSS:
            self.loss_types = {
                int(r["id"]): str(r.get("loss_type") or "") for r in self._rows[kind]
            }

    async def _read(self, kind: Kind) -> list[dict[str, Any]]:
        model, fields, matches = SOURCES[kind]
        if kind not in NARROW:
            rows = await self._transport.call(model, "search_read", domain=[], fields=fields)
            return list(rows or [])
        refs = sorted(self._wanted[kind])
        found: dict[int, dict[str, Any]] = {}
        for field in matches:  # products and equipment can be many: read only those named
            rows = await self._transport.call(
                model, "search_read", domain=[[field, "in", refs]], fields=fields
            )
            found.update({int(r["id"]): r for r in rows or []})
        return list(found.values())

    def _find(self, kind: Kind, ref: str) -> Lookup:
        note = self._notes.get(kind, "")
        rows = self._rows.get(kind, [])
        for field in SOURCES[kind][2]:
            ids = tuple(int(r["id"]) for r in rows if r.get(field) == ref)
            if ids:
                return Lookup(kind, ref, ids)
        return Lookup(kind, ref, (), note)
