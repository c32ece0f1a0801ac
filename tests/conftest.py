"""Session-wide: the markers that sort tests into lanes, and the summary that says loudly
when the real Odoo servers could not run.

Lanes (markers registered in pyproject.toml):
- ``make test`` runs everything (what CI runs);
- ``make test-fast`` leaves out ``odoo``, ``mosquitto``, ``root``, ``slow`` and
  ``browser`` (Debian's Chromium): a developer's loop that needs neither root nor
  network (loopback servers only).
"""

from __future__ import annotations

import pytest

from agent.forwarders.odoo.config import OdooProtocol
from tests.forwarders.odoo.servers import why_not_available

# Fixtures that bring a real Odoo server (PostgreSQL, odoo-bin) into a test.
REAL_ODOO_FIXTURES = {"target", "odoo_servers"}


def is_real_odoo_param(param: object) -> bool:
    """any_target's real servers are (version, protocol); its stand-ins are not."""
    return isinstance(param, tuple) and isinstance(param[1], OdooProtocol)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what a test needs from its fixtures, so no test has to remember to."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        if names & REAL_ODOO_FIXTURES or is_real_odoo_param(params.get("any_target")):
            item.add_marker(pytest.mark.odoo)
        if "root" in names:  # a Debian root to install the package into (chroot, dpkg)
            item.add_marker(pytest.mark.root)
        if "debs" in names:  # builds the .deb twice (a minute)
            item.add_marker(pytest.mark.slow)


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
