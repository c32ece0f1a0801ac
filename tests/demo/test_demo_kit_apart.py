"""The demo kit lives apart from the agent: the agent's packages never import it, and
`floorgate demo` / `simulate` say what to install when it is missing."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run_without_demo_kit(code: str) -> subprocess.CompletedProcess[str]:
    # None in sys.modules makes every import of the package fail as if it were absent.
    prelude = "import sys; sys.modules['floorgate_demo'] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.slow
def test_every_agent_module_imports_without_the_demo_kit() -> None:
    modules = sorted(
        info.name
        for package in ("agent", "drivers", "buffer")
        for info in pkgutil.walk_packages([str(REPO / package)], prefix=f"{package}.")
        if not info.name.endswith("__main__")
    )
    assert "agent.cli.main" in modules and "drivers.opcua.driver" in modules
    result = _run_without_demo_kit(
        f"import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["demo", "simulate"])
def test_demo_commands_say_what_to_install_when_the_kit_is_missing(command: str) -> None:
    result = _run_without_demo_kit(
        f"from agent.cli.main import main\nraise SystemExit(main([{command!r}]))"
    )
    assert result.returncode == 1
    assert f"floorgate {command} needs the demo kit" in result.stderr
    assert "pip install" in result.stderr and "Traceback" not in result.stderr
