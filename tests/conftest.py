"""Session-wide reporting: the summary says loudly when the real Odoo servers could not run."""

from __future__ import annotations

import pytest

from tests.forwarders.odoo.servers import why_not_available


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    not_run = [r for r in skipped if "REAL ODOO" in str(getattr(r, "longrepr", ""))]
    if not not_run:
        return
    reasons = "; ".join(f"{v}: {why}" for v, why in sorted(why_not_available().items()))
    terminalreporter.write_sep("!", "REAL ODOO TESTS NOT RUN", red=True, bold=True)
    terminalreporter.write_line(
        f"{len(not_run)} test(s) against real Odoo servers were skipped ({reasons}). "
        "Nothing about the Odoo destination is proven by this run.",
        red=True,
        bold=True,
    )
