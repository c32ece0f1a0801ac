"""A command whose reader goes away (`floorgate check-config config.yaml | head`) ends
quietly with 141, what a shell reports for `cat` or `grep` stopped the same way (128 +
SIGPIPE): no BrokenPipeError traceback, no "Exception ignored" at exit."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main as cli

PLANT50 = Path(__file__).resolve().parents[1] / "config" / "fixtures" / "plant50.yaml"


@pytest.mark.parametrize(
    "args",
    [["check-config", str(PLANT50)], ["check-config", "--expanded", str(PLANT50)]],
    ids=["summary", "expanded"],
)
def test_output_into_a_reader_that_closes_early_ends_quietly(args: list[str]) -> None:
    # Both print far more than a pipe holds (64 KiB), so the writer meets the closed pipe.
    floorgate = subprocess.Popen(
        [sys.executable, "-m", "agent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert floorgate.stdout is not None and floorgate.stderr is not None
    head = subprocess.run(
        ["head", "-n", "1"], stdin=floorgate.stdout, capture_output=True, text=True, timeout=60
    )
    floorgate.stdout.close()  # head holds the only reading end now, and it has exited
    with floorgate.stderr:
        stderr = floorgate.stderr.read().decode()
    assert floorgate.wait(timeout=60) == 128 + signal.SIGPIPE == 141, stderr
    assert stderr == ""
    assert head.returncode == 0 and len(head.stdout.splitlines()) == 1


def test_a_broken_pipe_that_is_not_stdout_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A socket's broken pipe is a fault to see, not a reader that went away."""

    def broken(_: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_check_config", broken)
    with pytest.raises(BrokenPipeError):
        cli.main(["check-config", str(PLANT50)])
