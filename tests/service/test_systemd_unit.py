"""The shipped systemd unit: systemd's own checks, run on it as shipped.

`systemd-analyze verify` needs the ExecStart binaries to exist, so the test points them at
this checkout's `floorgate`; everything else is the file as shipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "floorgate.service"
SERIAL_DROP_IN = ROOT / "systemd" / "serial-port.conf"
MAX_EXPOSURE = 2.0


@pytest.fixture(scope="module")
def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:  # .ci/run installs systemd; a failure, not a skip, so it is never lost
        pytest.fail("systemd-analyze is required: apt-get install -y systemd")
    return tool


def _installed_copy(tmp_path: Path, *drop_ins: Path) -> Path:
    floorgate = Path(sys.executable).parent / "floorgate"
    text = UNIT.read_text().replace("/usr/bin/floorgate", str(floorgate))
    for drop_in in drop_ins:  # a drop-in's sections apply as if appended to the unit
        text += "\n" + drop_in.read_text()
    path = tmp_path / "floorgate.service"
    path.write_text(text)
    return path


def _exposure(analyze: str, unit: Path) -> float:
    result = subprocess.run(
        [analyze, "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


@pytest.mark.parametrize("drop_ins", [(), (SERIAL_DROP_IN,)], ids=["unit", "with-serial-drop-in"])
def test_unit_verifies_and_its_exposure_is_at_most_2(
    analyze: str, tmp_path: Path, drop_ins: tuple[Path, ...]
) -> None:
    unit = _installed_copy(tmp_path, *drop_ins)
    verify = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == ""
    exposure = _exposure(analyze, unit)
    assert exposure <= MAX_EXPOSURE
    # The figure in the header comment is the one systemd reports today.
    if not drop_ins:
        assert f"rates this unit {exposure}" in UNIT.read_text()
    else:
        assert f"the unit rates {exposure}" in SERIAL_DROP_IN.read_text()


def test_unit_runs_the_agent_as_systemd_expects() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "ExecStart=/usr/bin/floorgate run --config /etc/floorgate/config.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus=78",
        "Restart=on-failure",
        "User=floorgate",
        "StateDirectory=floorgate",
        "ConfigurationDirectory=floorgate",
        "WatchdogSec=30s",
        "UMask=0077",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
    ):
        assert line in text.splitlines(), line
