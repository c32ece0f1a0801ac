"""What the mrp, stock and maintenance models do beyond storing fields, as measured on a
real Odoo (ODOO.md): an open availability/quality productivity record blocks its work
center; ``button_start`` refuses a blocked work center, pre-fills ``qty_producing``
with the remaining quantity and opens a timer (a productive productivity row with
``workorder_id``); ``button_mark_done`` returns the backorder wizard unless the context
says ``skip_backorder``, refuses a backorder of nothing, ends the timers, and answers a
window action on the backorder unless ``skip_redirection``;
``stock.scrap.action_validate`` returns the insufficient-quantity wizard when stock is
short, ``do_scrap`` validates anyway.

Mixed into ``tests.forwarders.odoo.standin_orm.Database`` (which provides ``tables`` and
``new_record``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.forwarders.odoo.standin_errors import OdooError, user_error, value_error

FMT = "%Y-%m-%d %H:%M:%S"
BLOCKING_LOSS_TYPES = ("availability", "quality")


class MrpBehaviour:
    tables: dict[str, dict[int, dict[str, Any]]]

    def new_record(self, model: str, vals: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    # -- side effects ------------------------------------------------------------------

    def _after_write(self, model: str, record: dict[str, Any], creating: bool = False) -> None:
        if model == "mrp.workcenter.productivity":
            loss = self.tables["mrp.workcenter.productivity.loss"].get(record["loss_id"], {})
            record["loss_type"] = loss.get("loss_type", False)
            if record["date_end"]:
                start = datetime.strptime(record["date_start"], FMT)
                end = datetime.strptime(record["date_end"], FMT)
                record["duration"] = round((end - start).total_seconds() / 60.0, 2)
            else:
                record["duration"] = 0.0
            self._refresh_working_state(record["workcenter_id"])
        elif model == "mrp.workorder" and creating:
            production = self.tables["mrp.production"][record["production_id"]]
            record["product_id"] = production["product_id"]
            record["qty_production"] = production["product_qty"]
        elif model == "mrp.workorder":
            if record["qty_producing"] is not False and record["qty_producing"] < 0:
                raise OdooError("odoo.exceptions.ValidationError", "quantity must be positive")
            production = self.tables["mrp.production"][record["production_id"]]
            production["qty_producing"] = record["qty_producing"]
        elif model == "product.product" and creating and not record["product_tmpl_id"]:
            template = self.new_record("product.template", {"name": record["name"]})
            record["product_tmpl_id"] = template["id"]
        elif model == "mrp.production" and creating and not record["name"]:
            record["name"] = f"WH/MO/{record['id']:05d}"

    def _refresh_working_state(self, workcenter_id: int) -> None:
        open_blocking = any(
            p["workcenter_id"] == workcenter_id
            and not p["date_end"]
            and p["loss_type"] in BLOCKING_LOSS_TYPES
            for p in self.tables["mrp.workcenter.productivity"].values()
        )
        workcenter = self.tables["mrp.workcenter"][workcenter_id]
        workcenter["working_state"] = "blocked" if open_blocking else "normal"

    # -- business methods --------------------------------------------------------------

    def m_action_confirm(
        self, model: str, records: list[dict[str, Any]], context: dict[str, Any]
    ) -> bool:
        for production in records:
            production["state"] = "confirmed"
            operations = [
                op
                for op in self.tables["mrp.routing.workcenter"].values()
                if op["bom_id"] == production["bom_id"]
            ]
            for op in operations:
                self.new_record(
                    "mrp.workorder",
                    {
                        "name": op["name"],
                        "production_id": production["id"],
                        "workcenter_id": op["workcenter_id"],
                    },
                )
        return True

    def m_button_start(
        self, model: str, records: list[dict[str, Any]], context: dict[str, Any]
    ) -> bool:
        for workorder in records:
            workcenter = self.tables["mrp.workcenter"][workorder["workcenter_id"]]
            if workcenter["working_state"] == "blocked":
                raise user_error("Please unblock the work center to start the work order.")
            if workorder["state"] in ("done", "cancel"):
                raise user_error("You cannot start a work order that is already done or cancelled")
            workorder["state"] = "progress"
            workorder["date_start"] = datetime.now(UTC).strftime(FMT)
            # Odoo pre-fills the whole remaining quantity: not a count.
            workorder["qty_producing"] = workorder["qty_production"] - workorder["qty_produced"]
            production = self.tables["mrp.production"][workorder["production_id"]]
            production["state"] = "progress"
            production["qty_producing"] = workorder["qty_producing"]
            productive = next(
                loss["id"]
                for loss in self.tables["mrp.workcenter.productivity.loss"].values()
                if loss["loss_type"] == "productive"
            )
            self.new_record(
                "mrp.workcenter.productivity",
                {
                    "workcenter_id": workorder["workcenter_id"],
                    "workorder_id": workorder["id"],
                    "loss_id": productive,
                    "user_id": min(self.tables["res.users"]),  # the API key's user
                    "date_start": workorder["date_start"],
                },
            )
        return True

    def m_button_mark_done(
        self, model: str, records: list[dict[str, Any]], context: dict[str, Any]
    ) -> Any:
        for production in records:
            if production["state"] in ("done", "cancel"):
                raise user_error(f"{production['name']} is already done or cancelled")
            if not production["qty_producing"] or production["qty_producing"] <= 0:
                raise user_error("The quantity to produce must be positive!")
            short = production["qty_producing"] < production["product_qty"]
            if short and not context.get("skip_backorder"):
                return {
                    "name": "You produced less than initial demand",
                    "type": "ir.actions.act_window",
                    "res_model": "mrp.production.backorder",
                    "view_mode": "form",
                    "target": "new",
                    "context": {"default_mrp_production_ids": [production["id"]]},
                }
        backorders = [self._finish(production, context) for production in records]
        made = [b for b in backorders if b is not None]
        if made and not context.get("skip_redirection"):
            return {
                "type": "ir.actions.act_window",
                "res_model": "mrp.production",
                "views": [[False, "form"]],
                "res_id": made[0],
            }
        return True

    def _finish(self, production: dict[str, Any], context: dict[str, Any]) -> int | None:
        """Mark done; the backorder's id when one is made."""
        produced = production["qty_producing"]
        remaining = production["product_qty"] - produced
        if production["id"] in context.get("mo_ids_to_backorder", []) and remaining <= 0:
            raise OdooError(
                "odoo.exceptions.ValidationError",
                "The operation cannot be completed: The quantity to produce must be positive!",
            )
        now = datetime.now(UTC).strftime(FMT)
        for timer in self.tables["mrp.workcenter.productivity"].values():
            workorder = self.tables["mrp.workorder"].get(timer["workorder_id"] or 0)
            if workorder and workorder["production_id"] == production["id"]:
                timer["date_end"] = timer["date_end"] or now
        production["state"] = "done"
        production["qty_produced"] = produced
        for workorder in self.tables["mrp.workorder"].values():
            if workorder["production_id"] == production["id"]:
                workorder["state"] = "done"
                workorder["qty_produced"] = produced
        if remaining > 0 and production["id"] in context.get("mo_ids_to_backorder", []):
            backorder = self.new_record(
                "mrp.production",
                {
                    "name": f"{production['name']}-002",
                    "product_id": production["product_id"],
                    "product_qty": remaining,
                    "bom_id": production["bom_id"],
                },
            )
            self.m_action_confirm("mrp.production", [backorder], context)
            return int(backorder["id"])
        return None

    def m_action_validate(
        self, model: str, records: list[dict[str, Any]], context: dict[str, Any]
    ) -> Any:
        if len(records) != 1:
            raise value_error(f"Expected singleton: stock.scrap{tuple(r['id'] for r in records)}")
        scrap = records[0]
        product = self.tables["product.product"][scrap["product_id"]]
        if product["qty_available"] < scrap["scrap_qty"]:
            return {
                "name": "Insufficient Quantity",
                "type": "ir.actions.act_window",
                "res_model": "stock.warn.insufficient.qty.scrap",
                "view_mode": "form",
                "target": "new",
                "context": {"default_scrap_id": scrap["id"]},
            }
        return self.m_do_scrap(model, records, context)

    def m_do_scrap(
        self, model: str, records: list[dict[str, Any]], context: dict[str, Any]
    ) -> bool:
        for scrap in records:
            if scrap["state"] == "done":
                continue
            product = self.tables["product.product"][scrap["product_id"]]
            product["qty_available"] -= scrap["scrap_qty"]
            scrap["state"] = "done"
        return True
