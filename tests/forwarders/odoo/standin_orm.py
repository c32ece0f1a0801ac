"""The in-memory database behind the Odoo stand-in: the models floorgate uses, with the
behaviour measured on a real Odoo 18/19 (see /work/shared/ODOO.md).

What it reproduces: required fields; naive-UTC datetimes "YYYY-MM-DD HH:MM:SS" (ISO "T",
"Z", offsets and microseconds raise builtins.ValueError); ``create`` of a list is one
transaction; ``load()`` with external ids (create, then update; last write wins; errors
in ``messages`` naming the row; the whole call refused when a row fails; datetimes read
in the user's timezone unless the context says ``tz``); each call one transaction.
What the mrp, stock and maintenance models do on top lives in
``tests.forwarders.odoo.standin_mrp``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from tests.forwarders.odoo.standin_errors import OdooError, user_error, value_error
from tests.forwarders.odoo.standin_mrp import MrpBehaviour

__all__ = ["MODELS", "PARAMS", "RECORD_METHODS", "Database", "OdooError", "user_error"]

DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
FMT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class F:
    """A field: type char | text | integer | float | boolean | datetime | date |
    selection | many2one; ``relation`` for many2one."""

    type: str
    required: bool = False
    relation: str | None = None
    selection: tuple[str, ...] = ()
    readonly: bool = False
    default: Any = None
    label: str = ""


MODELS: dict[str, dict[str, F]] = {
    "res.users": {"name": F("char", True), "login": F("char", True), "tz": F("char")},
    "res.users.apikeys": {
        "name": F("char", True),
        "user_id": F("many2one", True, "res.users"),
        "expiration_date": F("datetime"),
    },
    "mrp.workcenter": {
        "name": F("char", True, label="Work Center"),
        "code": F("char"),
        "working_state": F("selection", selection=("normal", "blocked", "done"), readonly=True),
        "active": F("boolean", default=True),
    },
    "mrp.workcenter.productivity.loss": {
        "name": F("char", True),
        "loss_type": F(
            "selection",
            True,
            selection=("availability", "performance", "quality", "productive"),
            default="availability",
        ),
    },
    "mrp.workcenter.productivity": {
        "workcenter_id": F("many2one", True, "mrp.workcenter", label="Work Center"),
        "loss_id": F("many2one", True, "mrp.workcenter.productivity.loss", label="Loss Reason"),
        "loss_type": F("char", readonly=True),
        "workorder_id": F("many2one", relation="mrp.workorder", label="Work Order"),
        "user_id": F("many2one", relation="res.users", label="User"),
        "date_start": F("datetime", True, label="Start Date"),
        "date_end": F("datetime", label="End Date"),
        "description": F("text"),
        "duration": F("float", readonly=True),
    },
    "product.template": {"name": F("char", True)},
    "product.product": {
        "name": F("char", True),
        "product_tmpl_id": F("many2one", relation="product.template"),
        "default_code": F("char"),
        "qty_available": F("float", default=0.0),
    },
    "mrp.bom": {
        "product_tmpl_id": F("many2one", True, "product.template", label="Product"),
        "product_id": F("many2one", relation="product.product"),
    },
    "mrp.routing.workcenter": {
        "name": F("char", True),
        "bom_id": F("many2one", True, "mrp.bom"),
        "workcenter_id": F("many2one", True, "mrp.workcenter"),
    },
    "mrp.production": {
        "name": F("char"),
        "product_id": F("many2one", True, "product.product", label="Product"),
        "product_qty": F("float", default=1.0),
        "bom_id": F("many2one", relation="mrp.bom"),
        "state": F(
            "selection",
            selection=("draft", "confirmed", "progress", "to_close", "done", "cancel"),
            default="draft",
            readonly=True,
        ),
        "qty_producing": F("float", default=0.0),
        "qty_produced": F("float", default=0.0, readonly=True),
    },
    "mrp.workorder": {
        "name": F("char", True),
        "production_id": F("many2one", True, "mrp.production"),
        "workcenter_id": F("many2one", True, "mrp.workcenter"),
        "product_id": F("many2one", relation="product.product", readonly=True),
        "state": F(
            "selection",
            selection=("pending", "waiting", "ready", "progress", "done", "cancel"),
            default="ready",
            readonly=True,
        ),
        "qty_production": F("float", readonly=True),
        "qty_producing": F("float", default=0.0),
        "qty_produced": F("float", default=0.0, readonly=True),
        "date_start": F("datetime", readonly=True),
    },
    "stock.scrap": {
        "name": F("char"),
        "product_id": F("many2one", True, "product.product", label="Product"),
        "scrap_qty": F("float", True, label="Quantity"),
        "production_id": F("many2one", relation="mrp.production"),
        "workorder_id": F("many2one", relation="mrp.workorder"),
        "state": F("selection", selection=("draft", "done"), default="draft", readonly=True),
    },
    "maintenance.equipment": {"name": F("char", True), "serial_no": F("char")},
    "maintenance.request": {
        "name": F("char", True, label="Subjects"),
        "equipment_id": F("many2one", relation="maintenance.equipment", label="Equipment"),
        "maintenance_type": F(
            "selection", selection=("corrective", "preventive"), default="corrective"
        ),
        "request_date": F("date", label="Request Date"),
        "priority": F("selection", selection=("0", "1", "2", "3"), default="0"),
        "description": F("html"),
    },
}

# Parameter names of each method, for JSON-RPC's positional arguments (after ids).
PARAMS: dict[str, list[str]] = {
    "search_read": ["domain", "fields", "offset", "limit", "order"],
    "search": ["domain", "offset", "limit", "order"],
    "search_count": ["domain"],
    "read": ["fields"],
    "create": ["vals_list"],
    "write": ["vals"],
    "unlink": [],
    "load": ["fields", "data"],
    "context_get": [],
    "button_start": [],
    "action_confirm": [],
    "button_mark_done": [],
    "action_validate": [],
    "do_scrap": [],
}
RECORD_METHODS = frozenset(
    {"read", "write", "unlink", "button_start", "action_confirm", "button_mark_done"}
    | {"action_validate", "do_scrap"}
)
READ_ONLY = frozenset({"search_read", "search", "search_count", "read", "context_get"})


def parse_datetime(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not DATETIME_RE.match(value):
        if isinstance(value, str) and DATE_RE.match(value):
            return value + " 00:00:00"
        raise value_error(f"time data {value!r} does not match format '{FMT}'")
    try:
        datetime.strptime(value, FMT)
    except ValueError as exc:
        raise value_error(str(exc)) from None
    return value


def parse_date(value: Any) -> str:
    """Odoo reads a date from the first 10 characters (fields.Date.to_date)."""
    try:
        return datetime.strptime(str(value)[:10], "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError:
        raise value_error(f"time data {value!r} does not match format '%Y-%m-%d'") from None


@dataclass
class Database(MrpBehaviour):
    """Tables of records (dicts with ``id``), external ids and the user."""

    user_tz: str = "Europe/Brussels"
    tables: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    xmlids: dict[str, tuple[str, int]] = field(default_factory=dict)
    next_id: int = 1

    def __post_init__(self) -> None:
        for model in MODELS:
            self.tables.setdefault(model, {})

    # -- dispatch ----------------------------------------------------------------------

    def call(self, model: str, method: str, ids: list[int] | None, named: dict[str, Any]) -> Any:
        if model not in MODELS:
            raise OdooError("werkzeug.exceptions.NotFound", f"model {model!r} does not exist")
        handler: Callable[..., Any] | None = getattr(self, "m_" + method, None)
        if handler is None or method not in PARAMS:
            raise OdooError(
                "builtins.AttributeError",
                f"The method '{model}.{method}' does not exist",
            )
        context = named.pop("context", None) or {}
        unknown = set(named) - set(PARAMS[method])
        if unknown:
            raise OdooError(
                "builtins.TypeError",
                f"{method}() got an unexpected keyword argument {sorted(unknown)[0]!r}",
            )
        # A call is one transaction: keep a copy to roll back to (records hold scalars
        # only, so a copy of each record dict is enough; reads need none).
        snapshot = (
            self.tables
            if method in READ_ONLY
            else {m: {i: dict(r) for i, r in t.items()} for m, t in self.tables.items()},
            dict(self.xmlids),
            self.next_id,
        )
        try:
            if method in RECORD_METHODS:
                return handler(model, self._browse(model, ids or []), context, **named)
            return handler(model, context, **named)
        except _LoadFailed as exc:
            self.tables, self.xmlids, self.next_id = snapshot
            return {"ids": False, "messages": exc.messages}
        except BaseException:
            self.tables, self.xmlids, self.next_id = snapshot
            raise

    def _browse(self, model: str, ids: list[int]) -> list[dict[str, Any]]:
        table = self.tables[model]
        missing = [i for i in ids if i not in table]
        if missing:
            raise OdooError(
                "odoo.exceptions.MissingError",
                f"Record does not exist or has been deleted. (Record: {model}({missing[0]},))",
            )
        return [table[i] for i in ids]

    # -- generic ORM -------------------------------------------------------------------

    def new_record(self, model: str, vals: dict[str, Any]) -> dict[str, Any]:
        fields = MODELS[model]
        record: dict[str, Any] = {"id": self.next_id}
        for name, spec in fields.items():
            record[name] = spec.default if spec.default is not None else False
        self._assign(model, record, vals, creating=True)
        for name, spec in fields.items():
            if spec.required and record[name] in (False, None, ""):
                label = spec.label or name
                raise OdooError(
                    "odoo.exceptions.ValidationError",
                    f"The operation cannot be completed: Missing required field '{label}'"
                    f" ({name}) on {model}",
                )
        self.tables[model][record["id"]] = record
        self.next_id += 1
        self._after_write(model, record, creating=True)
        return record

    def _assign(
        self, model: str, record: dict[str, Any], vals: dict[str, Any], creating: bool = False
    ) -> None:
        fields = MODELS[model]
        for name, value in vals.items():
            spec = fields.get(name)
            if spec is None:
                raise value_error(f"Invalid field {name!r} on model {model!r}")
            record[name] = self._convert(spec, name, value)
        if not creating:
            for name, spec in fields.items():
                if spec.required and name in vals and record[name] in (False, None, ""):
                    raise OdooError(
                        "odoo.exceptions.ValidationError",
                        f"Missing required value for the field '{spec.label or name}'",
                    )

    def _convert(self, spec: F, name: str, value: Any) -> Any:
        if value is False or value is None:
            return False
        if spec.type == "datetime":
            return parse_datetime(value, name)
        if spec.type == "date":
            return parse_date(value)
        if spec.type == "many2one":
            assert spec.relation is not None
            if not isinstance(value, int) or isinstance(value, bool):
                raise value_error(f"Wrong value for {name}: {value!r}")
            if value not in self.tables[spec.relation]:
                raise OdooError(
                    "psycopg2.errors.ForeignKeyViolation",
                    f'insert or update violates foreign key constraint on "{name}"',
                )
            return value
        if spec.type == "selection":
            if value not in spec.selection:
                raise value_error(f"Wrong value for {name}: {value!r}")
            return value
        if spec.type in ("float", "integer"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise value_error(f"could not convert {value!r} to a number for {name}")
            return float(value) if spec.type == "float" else int(value)
        return value

    def m_create(self, model: str, context: dict[str, Any], vals_list: Any) -> Any:
        single = isinstance(vals_list, dict)
        items = [vals_list] if single else vals_list
        ids = [self.new_record(model, dict(vals))["id"] for vals in items]
        return ids[0] if single else ids

    def m_write(
        self, model: str, records: list[dict[str, Any]], context: dict[str, Any], vals: Any
    ) -> bool:
        specs = MODELS[model]
        # Odoo ignores writes to computed read-only fields
        writable = {k: v for k, v in vals.items() if not getattr(specs.get(k), "readonly", False)}
        for record in records:
            self._assign(model, record, writable)
            self._after_write(model, record)
        return True

    def m_unlink(self, model: str, records: list[dict[str, Any]], context: dict[str, Any]) -> bool:
        for record in records:
            del self.tables[model][record["id"]]
        self.xmlids = {
            k: v for k, v in self.xmlids.items() if v[0] != model or v[1] in self.tables[model]
        }
        return True

    def search_ids(
        self, model: str, domain: list[Any], limit: int | None = None, order: str | None = None
    ) -> list[int]:
        rows = [r for r in self.tables[model].values() if _matches(self._getter(model, r), domain)]
        if order:
            key, _, direction = order.partition(" ")
            rows.sort(
                key=lambda r: (r.get(key) is False, r.get(key) or 0),
                reverse=direction.lower() == "desc",
            )
        ids = [r["id"] for r in rows]
        return ids[:limit] if limit else ids

    def _getter(self, model: str, record: dict[str, Any]) -> Callable[[str], Any]:
        """Field values by name, following many2one paths such as ``production_id.name``."""

        def get(path: str) -> Any:
            name, _, rest = path.partition(".")
            value = record.get(name, False)
            if not rest:
                return value
            relation = MODELS[model][name].relation
            if not value or relation is None:
                return False
            return self._getter(relation, self.tables[relation][value])(rest)

        return get

    def m_search(
        self,
        model: str,
        context: dict[str, Any],
        domain: list[Any] | None = None,
        offset: int = 0,
        limit: int | None = None,
        order: str | None = None,
    ) -> list[int]:
        return self.search_ids(model, domain or [], limit, order)[offset:]

    def m_search_count(
        self, model: str, context: dict[str, Any], domain: list[Any] | None = None
    ) -> int:
        return len(self.search_ids(model, domain or []))

    def m_search_read(
        self,
        model: str,
        context: dict[str, Any],
        domain: list[Any] | None = None,
        fields: list[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
        order: str | None = None,
    ) -> list[dict[str, Any]]:
        ids = self.search_ids(model, domain or [], limit, order)[offset:]
        return [self.read_record(model, self.tables[model][i], fields) for i in ids]

    def m_read(
        self,
        model: str,
        records: list[dict[str, Any]],
        context: dict[str, Any],
        fields: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        return [self.read_record(model, r, fields) for r in records]

    def read_record(
        self, model: str, record: dict[str, Any], fields: list[str] | None
    ) -> dict[str, Any]:
        specs = MODELS[model]
        result: dict[str, Any] = {"id": record["id"]}
        for name in fields or list(specs):
            if name == "id":
                continue
            if name not in specs:
                raise value_error(f"Invalid field {name!r} on model {model!r}")
            value = record.get(name, False)
            spec = specs[name]
            if spec.type == "many2one" and value:
                assert spec.relation is not None
                target = self.tables[spec.relation].get(value, {})
                value = [value, str(target.get("name", value))]
            result[name] = value
        return result

    def m_context_get(self, model: str, context: dict[str, Any]) -> dict[str, Any]:
        return {"lang": "en_US", "tz": self.user_tz, "uid": 2}

    # -- load() ------------------------------------------------------------------------

    def m_load(
        self, model: str, context: dict[str, Any], fields: list[str], data: list[list[Any]]
    ) -> dict[str, Any]:
        tz = ZoneInfo(context.get("tz") or self.user_tz or "UTC")
        messages: list[dict[str, Any]] = []
        ids: list[int] = []
        for index, row in enumerate(data):
            try:
                ids.append(self._load_row(model, fields, row, tz))
            except OdooError as exc:
                messages.append(
                    {
                        "type": "error",
                        "record": index,
                        "rows": {"from": index, "to": index},
                        "field": getattr(exc, "field", None) or "",
                        "message": exc.message,
                    }
                )
        if messages:
            raise _LoadFailed(messages)
        return {"ids": ids, "messages": []}

    def _load_row(self, model: str, fields: list[str], row: list[Any], tz: ZoneInfo) -> int:
        if len(row) != len(fields):
            raise value_error(f"row has {len(row)} values for {len(fields)} fields")
        xmlid: str | None = None
        db_id: int | None = None
        vals: dict[str, Any] = {}
        for column, raw in zip(fields, row, strict=True):
            value = "" if raw is None else raw
            if column == "id":
                xmlid = str(value) if value else None
                if xmlid and "." not in xmlid:
                    xmlid = "__import__." + xmlid
                continue
            if column == ".id":
                db_id = int(value) if value != "" else None
                continue
            name, _, suffix = column.partition("/")
            spec = MODELS[model].get(name)
            if spec is None:
                raise _field_error(name, f"Unknown field {name!r} for model {model}")
            try:
                vals[name] = self._load_value(model, spec, name, suffix, value, tz)
            except OdooError as exc:
                exc.field = name  # type: ignore[attr-defined]
                raise
        existing: int | None = db_id
        if xmlid and xmlid in self.xmlids:
            existing = self.xmlids[xmlid][1]
        if existing is not None:
            records = self._browse(model, [existing])
            self._assign(model, records[0], vals)
            self._after_write(model, records[0])
            return existing
        record = self.new_record(model, vals)
        if xmlid:
            self.xmlids[xmlid] = (model, record["id"])
        return int(record["id"])

    def _load_value(
        self, model: str, spec: F, name: str, suffix: str, value: Any, tz: ZoneInfo
    ) -> Any:
        if value == "":
            return False
        if spec.type == "many2one":
            assert spec.relation is not None
            if suffix == ".id":
                target = int(value)
                if target not in self.tables[spec.relation]:
                    raise _field_error(
                        name,
                        f"No matching record found for database id '{value}' in field "
                        f"'{spec.label or name}'",
                    )
                return target
            if suffix == "id":
                ref = str(value) if "." in str(value) else "__import__." + str(value)
                if ref not in self.xmlids:
                    raise _field_error(
                        name,
                        f"No matching record found for external id '{value}' in field "
                        f"'{spec.label or name}'",
                    )
                return self.xmlids[ref][1]
            matches = [
                r["id"] for r in self.tables[spec.relation].values() if r.get("name") == value
            ]
            if not matches:
                raise _field_error(name, f"No matching record found for name '{value}'")
            return matches[0]
        if spec.type == "datetime":
            local = datetime.strptime(parse_datetime(value, name), FMT).replace(tzinfo=tz)
            return local.astimezone(UTC).strftime(FMT)
        if spec.type in ("float", "integer"):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise _field_error(
                    name, f"'{value}' does not seem to be a number for field '{name}'"
                ) from None
            return number if spec.type == "float" else int(number)
        return value


class _LoadFailed(Exception):
    """load() refused the whole call: roll back, answer ids false with the messages."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        super().__init__("load failed")
        self.messages = messages


def _field_error(name: str, message: str) -> OdooError:
    error = value_error(message)
    error.field = name  # type: ignore[attr-defined]
    return error


def _matches(get: Callable[[str], Any], domain: list[Any]) -> bool:
    for term in domain:
        if not isinstance(term, list | tuple) or len(term) != 3:
            continue  # '&' prefixes: everything is AND here
        name, op, value = term
        actual = get(name)
        if op == "=" and actual != value:
            return False
        if op == "!=" and actual == value:
            return False
        if op == "in" and actual not in value:
            return False
        if op == "not in" and actual in value:
            return False
        if op == "ilike" and str(value).lower() not in str(actual or "").lower():
            return False
        if op == "=ilike" and str(value).lower() != str(actual or "").lower():
            return False
    return True
