"""The lock files against pyproject.toml.

`make test`, CI and `make deb` install from packaging/lock/ (pinned, hashed), not from
pyproject.toml's ranges, so a dependency added, removed or raised there changes nothing
until `make lock` has run: these tests fail until it has. They read files only (no
network, no resolver); the first ones feed the check a lock that is wrong on purpose.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from tests.packaging.debs import REPO, load_build_script

LOCK_DIR = REPO / "packaging/lock"
RUNTIME_LOCK = LOCK_DIR / "runtime.txt"  # [project] dependencies: the .deb's venv
TEST_LOCK = LOCK_DIR / "test.txt"  # the same plus every optional extra: make test, CI
FIX = "run `make lock` and commit packaging/lock/ with pyproject.toml"


def this_interpreter() -> dict[str, str]:
    return {key: str(value) for key, value in default_environment().items()}


def linux_cpython(full_version: str) -> dict[str, str]:
    env = this_interpreter()
    env.update(
        implementation_name="cpython",
        implementation_version=full_version,
        os_name="posix",
        platform_machine="x86_64",
        platform_python_implementation="CPython",
        platform_system="Linux",
        python_full_version=full_version,
        python_version=".".join(full_version.split(".")[:2]),
        sys_platform="linux",
    )
    return env


# Where the pins must hold: the .deb's interpreter (Debian 12's /usr/bin/python3.11) and
# the one running the tests (the dev venv, CI).
ENVIRONMENTS: dict[str, Mapping[str, str]] = {
    "Linux x86_64 CPython 3.11.2": linux_cpython("3.11.2"),
    "this interpreter": this_interpreter(),
}


@dataclass
class Pin:
    name: str  # normalised (PEP 503)
    version: str
    marker: Marker | None
    hashes: list[str]
    via: list[str] = field(default_factory=list)  # uv's annotation: who asked for it


def lock_entries(text: str) -> list[tuple[str, list[str]]]:
    """Each requirement of a lock (continuation lines joined) with the comments under it."""
    entries: list[tuple[str, list[str]]] = []
    continued = False
    for raw in text.splitlines():
        line = raw.strip()
        content = line.removesuffix("\\").strip()
        if continued:
            entries[-1] = (f"{entries[-1][0]} {content}", entries[-1][1])
        elif line.startswith("#"):
            if entries:  # the header's comments belong to no pin
                entries[-1][1].append(line.removeprefix("#").strip())
        elif line:
            entries.append((content, []))
        continued = line.endswith("\\") and not line.startswith("#")
    return entries


def parse_pin(line: str, comments: list[str]) -> Pin | str:
    """One requirement of a lock, or what is wrong with it."""
    requirement, *options = re.split(r"\s+(?=--)", line)
    hashes = [opt.removeprefix("--hash=") for opt in options if opt.startswith("--hash=")]
    try:
        req = Requirement(requirement)
    except InvalidRequirement:
        return f"not a requirement: {line!r}"
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        return f"{requirement}: not pinned to one version (==)"
    if len(hashes) != len(options):
        return f"{requirement}: options other than --hash: {options}"
    if not hashes or not all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes):
        return f"{requirement}: no sha256 --hash for each file"
    # uv's annotation: "via NAME" on one line, or "via" and one NAME a line below it.
    via = [re.sub(r"^via(\s+|$)", "", comment) for comment in comments]
    return Pin(
        canonicalize_name(req.name), specs[0].version, req.marker, hashes, list(filter(None, via))
    )


def parse_lock(text: str) -> tuple[list[Pin], list[str]]:
    """The pins of a `uv pip compile --generate-hashes` file, and what is wrong in it."""
    pins, problems = [], []
    for line, comments in lock_entries(text):
        parsed = parse_pin(line, comments)
        if isinstance(parsed, Pin):
            pins.append(parsed)
        else:
            problems.append(parsed)
    return pins, problems


def lock_problems(text: str, requirements: list[str], project: str) -> list[str]:
    """What keeps a lock from matching these requirements of pyproject.toml.

    Each requirement must be pinned, at a version its specifier allows, wherever its
    marker applies; a pin annotated as asked for by pyproject.toml must still be asked
    for (a dependency removed there, a runtime lock with the test tools in it).
    """
    pins, problems = parse_lock(text)
    direct_via = f"{project} (pyproject.toml)"
    wanted = {canonicalize_name(Requirement(item).name) for item in requirements}
    if pins and not any(direct_via in pin.via for pin in pins):
        problems.append(f"no pin says `via {direct_via}`: not written by `make lock`?")
    for pin in pins:
        if not pin.via:
            problems.append(f"{pin.name}=={pin.version}: no `# via` annotation")
        elif direct_via in pin.via and pin.name not in wanted:
            problems.append(
                f"{pin.name}=={pin.version} is pinned for pyproject.toml, which no longer asks "
                "for it"
            )
    for item in requirements:
        req = Requirement(item)
        name = canonicalize_name(req.name)
        if name == canonicalize_name(project):  # an extra naming others: floorgate[test]
            continue
        for label, env in ENVIRONMENTS.items():
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            applicable = [
                pin
                for pin in pins
                if pin.name == name and (pin.marker is None or pin.marker.evaluate(env))
            ]
            if not applicable:
                problems.append(f"{item}: not pinned ({label})")
            for pin in applicable:
                if not req.specifier.contains(pin.version, prereleases=True):
                    problems.append(f"{item}: the lock pins {pin.version} ({label})")
    return sorted(set(problems))


def pyproject() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    assert isinstance(project, dict)
    return project


def requirements_of(project: dict[str, object], extras: bool) -> list[str]:
    """[project] dependencies, and with extras=True those of every optional extra too
    (what `make lock` gives uv: --all-extras for test.txt)."""
    groups = [project.get("dependencies", [])]
    if extras:
        optional = project.get("optional-dependencies", {})
        assert isinstance(optional, dict)
        groups += optional.values()
    found = []
    for group in groups:
        assert isinstance(group, list)
        found += [str(item) for item in group]
    return found


def read_lock(path: Path) -> str:
    if not path.is_file():
        pytest.fail(f"{path.relative_to(REPO)} is missing: {FIX}")
    return path.read_text()


# --- the check itself, on a small lock that is wrong in known ways ------------------

SAMPLE = """\
# This file was autogenerated by uv via the following command:
#    make lock
anyio==4.16.0 \\
    --hash=sha256:{a}
    # via httpx
colorama==0.4.6 ; sys_platform == 'win32' \\
    --hash=sha256:{b}
    # via click
httpx==0.28.1 \\
    --hash=sha256:{c} \\
    --hash=sha256:{d}
    # via
    #   -c packaging/lock/runtime.txt
    #   demo (pyproject.toml)
tenacity==9.2.1 \\
    --hash=sha256:{e}
    # via demo (pyproject.toml)
""".format(**{key: key * 64 for key in "abcde"})
SAMPLE_REQUIREMENTS = ["httpx>=0.28", "tenacity", "colorama; sys_platform == 'win32'"]


def test_check_accepts_a_matching_lock() -> None:
    assert lock_problems(SAMPLE, SAMPLE_REQUIREMENTS, "demo") == []
    pins, _ = parse_lock(SAMPLE)
    assert [(pin.name, pin.version) for pin in pins][:2] == [
        ("anyio", "4.16.0"),
        ("colorama", "0.4.6"),
    ]
    assert pins[2].via == ["-c packaging/lock/runtime.txt", "demo (pyproject.toml)"]
    assert len(pins[2].hashes) == 2


@pytest.mark.parametrize(
    ("lock", "requirements", "expected"),
    [
        pytest.param(
            SAMPLE, [*SAMPLE_REQUIREMENTS, "orjson>=3.10"], "orjson>=3.10: not pinned", id="added"
        ),
        pytest.param(
            SAMPLE,
            ["httpx>=0.29", *SAMPLE_REQUIREMENTS[1:]],
            "httpx>=0.29: the lock pins 0.28.1",
            id="bound-raised",
        ),
        pytest.param(
            SAMPLE,
            SAMPLE_REQUIREMENTS[::2],
            "tenacity==9.2.1 is pinned for pyproject.toml, which no longer asks for it",
            id="removed",
        ),
        pytest.param(
            SAMPLE, [*SAMPLE_REQUIREMENTS, "colorama"], "colorama: not pinned", id="marker"
        ),
        pytest.param(
            SAMPLE.replace("tenacity==9.2.1", "tenacity>=9.2"),
            SAMPLE_REQUIREMENTS,
            "tenacity>=9.2: not pinned to one version",
            id="unpinned",
        ),
        pytest.param(
            SAMPLE.replace(f"anyio==4.16.0 \\\n    --hash=sha256:{'a' * 64}", "anyio==4.16.0"),
            SAMPLE_REQUIREMENTS,
            "anyio==4.16.0: no sha256 --hash",
            id="unhashed",
        ),
    ],
)
def test_check_finds_what_is_wrong(lock: str, requirements: list[str], expected: str) -> None:
    problems = lock_problems(lock, requirements, "demo")
    assert any(problem.startswith(expected) for problem in problems), problems


# --- the repository's lock files ---------------------------------------------------


@pytest.mark.parametrize(
    ("lock", "extras"), [(RUNTIME_LOCK, False), (TEST_LOCK, True)], ids=["runtime", "test"]
)
def test_lock_matches_pyproject(lock: Path, extras: bool) -> None:
    project = pyproject()
    problems = lock_problems(
        read_lock(lock), requirements_of(project, extras), str(project["name"])
    )
    assert not problems, f"{lock.relative_to(REPO)} does not match pyproject.toml ({FIX}):\n" + (
        "\n".join(problems)
    )


def test_tests_run_the_versions_the_deb_ships() -> None:
    """make lock resolves test.txt under runtime.txt's pins: no shared package differs."""
    runtime, _ = parse_lock(read_lock(RUNTIME_LOCK))
    test, _ = parse_lock(read_lock(TEST_LOCK))
    tested = {(pin.name, pin.version) for pin in test}
    differ = [
        f"{pin.name}=={pin.version}" for pin in runtime if (pin.name, pin.version) not in tested
    ]
    assert not differ, f"test.txt lacks the runtime pins {differ} ({FIX})"


# --- how packaging/build_deb.py reads the runtime lock ------------------------------


def test_build_script_reads_the_pins_this_test_reads() -> None:
    build_deb = load_build_script()
    pins, _ = parse_lock(read_lock(RUNTIME_LOCK))
    assert build_deb.lock_pins(RUNTIME_LOCK) == {f"{pin.name}=={pin.version}" for pin in pins}


def test_build_script_refuses_a_venv_that_is_not_the_lock(tmp_path: Path) -> None:
    build_deb = load_build_script()
    lock = tmp_path / "runtime.txt"
    with pytest.raises(build_deb.BuildError, match="is missing: run `make lock`"):
        build_deb.check_matches_lock(["floorgate==0.1.0"], lock)
    lock.write_text(SAMPLE)
    build_deb.check_matches_lock(["anyio==4.16.0", "floorgate==0.1.0", "Tenacity==9.2.1"], lock)
    with pytest.raises(build_deb.BuildError, match=r"does not pin: httpx==0\.28\.2$"):
        build_deb.check_matches_lock(["anyio==4.16.0", "httpx==0.28.2"], lock)
