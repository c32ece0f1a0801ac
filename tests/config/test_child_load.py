"""`floorgate run` loads its config in a forked child (agent.config.child).

Each case runs in a fresh interpreter, as `floorgate run` does: the fork is only taken
while the process has one thread, which a pytest process cannot promise.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import agent.config.child as child
from agent.config.child import load_in_subprocess
from agent.config.loader import ConfigError, load_config
from tests.config.test_config import BASE, mutated, write

PROBE = r"""
import json, os, sys, threading
from pathlib import Path

import agent.config.child as child
from agent.config.loader import ConfigError, load_config

path, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "with-a-thread":
    release = threading.Event()
    threading.Thread(target=release.wait, daemon=True).start()
if mode in ("child-exits", "child-killed"):
    parent, real = os.getpid(), child.load_config
    def fail_in_child(found):
        if os.getpid() == parent:
            return real(found)
        if mode == "child-killed":
            os.kill(os.getpid(), 9)
        os._exit(3)
    child.load_config = fail_in_child  # the parent's own load uses the real one

loading = child.ChildLoad.start(path)
report = {"forked": loading.forked}
report["ahead"] = loading.import_stacks()
report["imported"] = [name for name in report["ahead"] if name in sys.modules]
try:
    config = loading.result()
except ConfigError as exc:
    report["yaml_in_parent"] = "yaml" in sys.modules
    report["error"] = exc.render()
    report["line"] = exc.problems[0].line
else:
    report["yaml_in_parent"] = "yaml" in sys.modules
    report["health_port"] = config.health.port
    report["equal"] = config == load_config(path)
print(json.dumps(report))
"""


def probe(path: Path, mode: str = "plain", **env: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), mode],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def test_child_returns_the_same_config_and_the_parent_never_parses_yaml(tmp_path: Path) -> None:
    found = probe(write(tmp_path, BASE))
    assert found["forked"] is True
    assert found["equal"] is True
    assert found["yaml_in_parent"] is False


def test_parent_imports_the_stacks_the_file_names_while_the_child_validates(
    tmp_path: Path,
) -> None:
    found = probe(write(tmp_path, BASE))  # a Modbus TCP source, an HTTP destination
    assert found["ahead"] == ["agent.forwarders.http", "drivers.modbus"]
    assert found["imported"] == found["ahead"]


def test_commented_out_types_and_other_type_keys_import_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    path.write_text(
        path.read_text()
        + "# destinations:\n#   - type: mqtt\n"
        + "#  - {name: x, type: odoo}\n"  # flow style, commented out
    )
    found = probe(path)
    assert found["ahead"] == ["agent.forwarders.http", "drivers.modbus"]
    example = probe(Path(__file__).resolve().parents[2] / "config.example.yaml")
    assert example["ahead"] == ["agent.forwarders.http", "drivers.modbus", "drivers.opcua"]


def test_yaml_syntax_error_comes_back_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("agent:\n  id: line-1\nsources: [\n")
    found = probe(path)
    assert found["forked"] is True
    assert "YAML syntax error" in found["error"]
    assert found["line"] is not None


def test_environment_overrides_reach_the_child(tmp_path: Path) -> None:
    found = probe(write(tmp_path, BASE), FLOORGATE__HEALTH__PORT="9123")
    assert found["forked"] is True
    assert found["health_port"] == 9123


def test_config_error_comes_back_with_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, mutated(sources__0__signals__2__data_type="float17"))
    expected_line = next(
        i for i, line in enumerate(path.read_text().splitlines(), 1) if "float17" in line
    )
    found = probe(path)
    assert found["forked"] is True
    assert "sources[0].signals[2].data_type" in found["error"]
    assert str(path) in found["error"]
    assert found["line"] == expected_line


@pytest.mark.parametrize("mode", ["child-exits", "child-killed"])
def test_a_failed_child_means_loading_in_process(tmp_path: Path, mode: str) -> None:
    found = probe(write(tmp_path, BASE), mode)
    assert found["forked"] is True
    assert found["equal"] is True
    assert found["yaml_in_parent"] is True  # the parent parsed the file itself


def test_no_fork_while_other_threads_run(tmp_path: Path) -> None:
    found = probe(write(tmp_path, BASE), "with-a-thread")
    assert found["forked"] is False
    assert found["equal"] is True


def test_every_source_and_destination_type_names_its_stack() -> None:
    from agent.registry import DRIVERS, FORWARDERS, STACK_MODULES

    assert set(STACK_MODULES) == set(DRIVERS) | set(FORWARDERS)
    for module in set(STACK_MODULES.values()):
        importlib.import_module(module)


# -- reload: a fresh interpreter, while the loop goes on ---------------------------------


async def test_reload_load_runs_in_a_subprocess_while_the_loop_goes_on(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        config = await load_in_subprocess(path)
    finally:
        ticker.cancel()
    assert config == load_config(path)
    assert ticks > 0  # a load on the loop itself would have let none run


async def test_reload_load_brings_the_config_error_back(tmp_path: Path) -> None:
    path = write(tmp_path, mutated(sources__0__signals__2__data_type="float17"))
    with pytest.raises(ConfigError) as caught:
        await load_in_subprocess(path)
    assert caught.value.problems[0].path == "sources[0].signals[2].data_type"
    assert caught.value.problems[0].line is not None


async def test_reload_load_falls_back_to_a_thread_when_the_subprocess_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, BASE)
    monkeypatch.setattr(child.sys, "executable", "/bin/false")  # exits 1, prints nothing
    assert await load_in_subprocess(path) == load_config(path)
