"""The shipped unit cannot restart-loop on a bad config.

systemd's restart decision is modelled from systemd.service(5) (systemd 252) and checked
against the unit file as shipped (plus its drop-in):

- Restart= decides from the exit of any service process: ExecStartPre=, ExecStart=,
  ExecStartPost=, ExecStop=, ExecStopPost= (table "Exit causes and the effect of the
  Restart= settings"). A command prefixed with "-" has its failure ignored.
- RestartPreventExitStatus=, RestartForceExitStatus= and SuccessExitStatus= apply to the
  main process only; an ExecStartPre= exiting with a "prevented" status still gets the
  unit restarted (systemd issue 11868; service_shall_restart() tests main_exec_status).
- A failing ExecReload= fails the reload, not the service; an ExecCondition= exiting
  1-254 skips the start without a failure.

Then the real `floorgate run`, with the unit's own arguments, is run on broken configs:
it must exit with a status the unit lists in RestartPreventExitStatus=, before READY=1.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "floorgate.service"
SERIAL_DROP_IN = ROOT / "systemd" / "serial-port.conf"
FLOORGATE = Path(sys.executable).parent / "floorgate"  # this checkout's /usr/bin/floorgate
EX_CONFIG = 78  # sysexits.h; what every floorgate command exits with on an invalid config

# Types whose main process is the ExecStart= process (forking/oneshot/dbus differ).
MAIN_IS_EXEC_START = {"simple", "exec", "notify", "notify-reload", "idle"}
CONTROL_PROCESSES = ("ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost")
EXEC_KEYS = ("ExecCondition", *CONTROL_PROCESSES, "ExecStart", "ExecReload")

# How long a start takes to fail on a bad config, at most (the agent takes about 1 s).
FAST_FAILURE_S = 10.0


# --- the unit file -------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """Assignments per section, in file order (repeated keys and resets kept)."""

    sections: dict[str, list[tuple[str, str]]]

    def values(self, section: str, key: str) -> list[str]:
        """A list setting: assignments accumulate, an empty one resets the list."""
        found: list[str] = []
        for name, value in self.sections.get(section, []):
            if name == key:
                found = [*found, value] if value else []
        return found

    def value(self, section: str, key: str, default: str | None = None) -> str | None:
        """A single-valued setting: the last assignment wins."""
        found = self.values(section, key)
        return found[-1] if found else default


def parse_unit(*texts: str) -> Unit:
    """Parse unit text, then drop-ins, as systemd does (they apply as if appended)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for text in texts:
        logical: list[str] = []
        pending = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not pending and (not line or line[0] in "#;"):
                continue
            if line.endswith("\\"):  # continuation: joined with a space
                pending += line[:-1] + " "
                continue
            logical.append(pending + line)
            pending = ""
        for line in logical:
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], [])
                continue
            key, sep, value = line.partition("=")
            assert sep and current is not None, f"not an assignment in a section: {line!r}"
            current.append((key.strip(), value.strip()))
    return Unit(sections)


@dataclass(frozen=True)
class Command:
    kind: str  # ExecStartPre, ExecStart, ...
    argv: tuple[str, ...]
    failure_ignored: bool  # the "-" prefix

    def __str__(self) -> str:
        return f"{self.kind}={shlex.join(self.argv)}"


def commands(unit: Unit) -> list[Command]:
    found = []
    for kind in EXEC_KEYS:
        for line in unit.values("Service", kind):
            prefix = line[: len(line) - len(line.lstrip("-@:+!"))]
            argv = tuple(shlex.split(line[len(prefix) :]))
            found.append(Command(kind, argv, failure_ignored="-" in prefix))
    return found


def exit_statuses(unit: Unit, key: str) -> set[int]:
    """Numeric exit statuses of a status list; signal names are not exit statuses."""
    statuses = set()
    for token in " ".join(unit.values("Service", key)).split():
        if token.startswith("SIG"):
            continue
        assert token.isdigit(), f"{key}: the model reads numbers and signals, not {token!r}"
        statuses.add(int(token))
    return statuses


def seconds(span: str) -> float:
    """A systemd.time(5) time span ("2min", "5s", "1min 30s", "120")."""
    factors = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
    parts = re.findall(r"([0-9.]+)\s*([a-z]*)", span)
    assert parts and "".join(n + u for n, u in parts) == span.replace(" ", ""), span
    return sum(float(number) * factors[unit] for number, unit in parts)


# --- systemd's restart decision, per systemd.service(5) ------------------------------


def restarts_after_exit(unit: Unit, command: Command, status: int) -> bool:
    """Whether systemd restarts the service after `command` exits with `status` on its own
    (no signal, no timeout, no `systemctl stop`)."""
    service_type = unit.value("Service", "Type", "simple")
    assert service_type in MAIN_IS_EXEC_START, f"the model does not cover Type={service_type}"
    restart = unit.value("Service", "Restart", "no")
    if command.kind == "ExecReload":
        return False  # a failed reload leaves the service running
    if command.kind == "ExecCondition" and 1 <= status <= 254:
        return False  # the start is skipped, not failed
    if command.failure_ignored:
        return False  # the "-" prefix: the start goes on
    main = command.kind == "ExecStart"
    clean = status == 0 or (main and status in exit_statuses(unit, "SuccessExitStatus"))
    if main and status in exit_statuses(unit, "RestartPreventExitStatus"):
        return False
    if main and status in exit_statuses(unit, "RestartForceExitStatus"):
        return True
    return {"always": True, "on-success": clean, "on-failure": not clean}.get(restart, False)


def floorgate_commands(unit: Unit) -> list[Command]:
    """The unit's processes that run floorgate: each loads and validates the config."""
    return [c for c in commands(unit) if Path(c.argv[0]).name == "floorgate"]


def config_failures_that_restart(unit: Unit) -> list[str]:
    return [str(c) for c in floorgate_commands(unit) if restarts_after_exit(unit, c, EX_CONFIG)]


def shipped(*drop_ins: Path) -> Unit:
    return parse_unit(UNIT.read_text(), *(d.read_text() for d in drop_ins))


AS_SHIPPED = pytest.mark.parametrize(
    "drop_ins", [(), (SERIAL_DROP_IN,)], ids=["unit", "with-serial-drop-in"]
)


# --- the shipped unit ----------------------------------------------------------------


@AS_SHIPPED
def test_no_process_that_validates_the_config_restarts_the_unit_on_exit_78(
    drop_ins: tuple[Path, ...],
) -> None:
    unit = shipped(*drop_ins)
    assert floorgate_commands(unit), "the unit runs floorgate somewhere"
    assert config_failures_that_restart(unit) == []


@AS_SHIPPED
def test_the_config_is_validated_by_the_main_process_running_floorgate_run(
    drop_ins: tuple[Path, ...],
) -> None:
    unit = shipped(*drop_ins)
    validating = floorgate_commands(unit)
    assert [str(c) for c in validating] == [
        "ExecStart=/usr/bin/floorgate run --config /etc/floorgate/config.yaml"
    ]
    assert EX_CONFIG in exit_statuses(unit, "RestartPreventExitStatus")


@AS_SHIPPED
def test_other_failures_of_the_agent_are_still_restarted(drop_ins: tuple[Path, ...]) -> None:
    unit = shipped(*drop_ins)
    (main,) = [c for c in commands(unit) if c.kind == "ExecStart"]
    assert restarts_after_exit(unit, main, 1)  # a crash
    assert restarts_after_exit(unit, main, 69)  # EX_UNAVAILABLE, e.g. the health port taken
    assert not restarts_after_exit(unit, main, 0)


def test_the_model_finds_the_reported_loop_of_an_exec_start_pre_check_config() -> None:
    """Issue 11868 as reported here: the check the unit used to run before the agent."""
    text = UNIT.read_text().replace(
        "\nExecStart=",
        "\nExecStartPre=/usr/bin/floorgate check-config /etc/floorgate/config.yaml\nExecStart=",
    )
    assert config_failures_that_restart(parse_unit(text)) == [
        "ExecStartPre=/usr/bin/floorgate check-config /etc/floorgate/config.yaml"
    ]
    # The "-" prefix would not loop: the failure is ignored and `run` fails as main process.
    ignored = text.replace("ExecStartPre=/usr", "ExecStartPre=-/usr")
    assert config_failures_that_restart(parse_unit(ignored)) == []


def test_start_limit_stops_a_fast_restart_loop_but_not_watchdog_restarts() -> None:
    unit = shipped()
    assert unit.value("Service", "StartLimitIntervalSec") is None  # ignored there
    assert unit.value("Service", "StartLimitBurst") is None
    interval = seconds(unit.value("Unit", "StartLimitIntervalSec", "") or "")
    burst = int(unit.value("Unit", "StartLimitBurst", "") or "0")
    restart_sec = seconds(unit.value("Service", "RestartSec", "") or "")
    watchdog = seconds(unit.value("Service", "WatchdogSec", "") or "")
    assert interval > 0 and burst > 0
    # systemd refuses the start after `burst` starts within `interval` of the first one.
    assert burst * (restart_sec + FAST_FAILURE_S) < interval
    # A hang is found after WatchdogSec at the earliest: such restarts never hit the limit.
    assert burst * (restart_sec + watchdog) >= interval


# --- the model, against systemd.service(5) -------------------------------------------


def _service(*lines: str) -> Unit:
    return parse_unit("[Service]\nType=notify\n" + "\n".join(lines) + "\n")


def _command(unit: Unit, kind: str) -> Command:
    (found,) = [c for c in commands(unit) if c.kind == kind]
    return found


@pytest.mark.parametrize(
    ("lines", "kind", "status", "restarts"),
    [
        (["Restart=on-failure"], "ExecStart", 1, True),
        (["Restart=on-failure"], "ExecStart", 0, False),
        (["Restart=on-failure", "RestartPreventExitStatus=78"], "ExecStart", 78, False),
        (["Restart=on-failure", "RestartPreventExitStatus=78"], "ExecStartPre", 78, True),
        (["Restart=on-failure", "RestartPreventExitStatus=78"], "ExecStartPost", 78, True),
        (["Restart=on-failure", "RestartPreventExitStatus=1 78 SIGABRT"], "ExecStart", 78, False),
        (
            ["Restart=on-failure", "RestartPreventExitStatus=78", "RestartPreventExitStatus="],
            "ExecStart",
            78,
            True,
        ),
        (["Restart=always", "RestartPreventExitStatus=78"], "ExecStart", 78, False),
        (["Restart=always"], "ExecStart", 0, True),
        (["Restart=on-abnormal"], "ExecStart", 1, False),
        (["Restart=no"], "ExecStartPre", 1, False),
        (["Restart=on-failure", "SuccessExitStatus=78"], "ExecStart", 78, False),
        (["Restart=on-failure", "SuccessExitStatus=78"], "ExecStartPre", 78, True),
        (["Restart=on-success", "RestartForceExitStatus=78"], "ExecStart", 78, True),
        (["Restart=on-failure"], "ExecReload", 78, False),
        (["Restart=on-failure"], "ExecCondition", 78, False),
        (["Restart=on-failure"], "ExecCondition", 255, True),
    ],
)
def test_the_model_follows_systemd_service_5(
    lines: list[str], kind: str, status: int, restarts: bool
) -> None:
    other = [] if kind == "ExecStart" else [f"{kind}=/bin/false"]
    unit = _service(*lines, "ExecStart=/bin/true", *other)
    assert restarts_after_exit(unit, _command(unit, kind), status) is restarts


def test_the_model_honours_the_minus_prefix() -> None:
    unit = _service("Restart=on-failure", "ExecStartPre=-/bin/false", "ExecStart=/bin/true")
    assert not restarts_after_exit(unit, _command(unit, "ExecStartPre"), 78)


def test_the_parser_keeps_drop_in_order_and_continuations() -> None:
    unit = parse_unit(
        "[Service]\nRestartPreventExitStatus=1\nExecStart=/bin/a \\\n  --flag\n",
        "[Service]\nRestartPreventExitStatus=\nRestartPreventExitStatus=78\n",
    )
    assert exit_statuses(unit, "RestartPreventExitStatus") == {78}
    assert _command(unit, "ExecStart").argv == ("/bin/a", "--flag")


# --- systemd and the real program ----------------------------------------------------


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # as in test_systemd_unit.py: a failure, never a skip
        pytest.fail("systemd-analyze is required: apt-get install -y systemd")
    unit = tmp_path / "floorgate.service"  # verify needs the ExecStart binary to exist
    unit.write_text(UNIT.read_text().replace("/usr/bin/floorgate", str(FLOORGATE)))
    verify = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == ""  # e.g. no "Unknown key name" for a misplaced key


BAD_CONFIGS = {
    "yaml-syntax-error": "agent:\n  id: [unclosed\nsources: {\n",
    "unknown-key": "agent:\n  id: press-1\nnot_a_key: 1\n",
    "empty-file": "",
    "missing-file": None,
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_floorgate_run_as_the_unit_runs_it_exits_with_a_prevented_status_before_ready(
    tmp_path: Path, name: str
) -> None:
    unit = shipped()
    argv = list(_command(unit, "ExecStart").argv)
    config = tmp_path / "config.yaml"
    if BAD_CONFIGS[name] is not None:
        config.write_text(BAD_CONFIGS[name] or "")
    assert argv[0] == "/usr/bin/floorgate" and "--config" in argv
    argv[0] = str(FLOORGATE)
    argv[argv.index("--config") + 1] = str(config)

    notify_name = f"floorgate-test-{os.getpid()}-{tmp_path.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind("\0" + notify_name)
        notify.setblocking(False)
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NOTIFY_SOCKET": "@" + notify_name},
        )
        received = []
        while True:
            try:
                received.append(notify.recv(4096).decode())
            except BlockingIOError:
                break

    assert proc.returncode in exit_statuses(unit, "RestartPreventExitStatus"), proc.stderr
    assert proc.returncode == EX_CONFIG
    assert f"invalid configuration in {config}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any("READY=1" in message.splitlines() for message in received), received
