"""Real Odoo 18 and 19 servers for one test session.

``.ci/odoo-servers prepare`` (run by ``make test`` and CI) installs PostgreSQL and a venv
per version and builds a template database each, with a non-admin integration user and
its API key; it writes ``servers.json`` in its cache. Here each template is copied into
a fresh database for the session and ``odoo-bin`` is started on 127.0.0.1. The servers
stop (and their databases are dropped) when the session ends.

``OdooServer.stop()`` / ``start()`` let an end-to-end test take Odoo down mid-stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / ".ci" / "odoo-servers"
VERSIONS = ("18.0", "19.0")
START_TIMEOUT = 120.0


def cache_dir() -> Path:
    if "FLOORGATE_ODOO_CACHE" in os.environ:
        return Path(os.environ["FLOORGATE_ODOO_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/floorgate-odoo")
    return Path.home() / ".cache" / "floorgate-odoo"


def trees_dir() -> Path:
    default = REPO.parent / "shared" / "odoo"
    return Path(os.environ.get("FLOORGATE_ODOO_TREES", default)).resolve()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def why_not_available() -> dict[str, str]:
    """Version -> why its real server cannot run here (empty: all can)."""
    reasons: dict[str, str] = {}
    trees = trees_dir()
    info = cache_dir() / "servers.json"
    prepared = (
        {s["version"] for s in json.loads(info.read_text())["servers"]} if info.exists() else set()
    )
    for version in VERSIONS:
        if not (trees / version / "odoo-bin").is_file():
            reasons[version] = f"no Odoo tree at {trees / version}"
        elif version not in prepared:
            reasons[version] = (
                f"not prepared: run {SCRIPT.relative_to(REPO)} prepare (or make test)"
            )
    return reasons


@dataclass
class OdooServer:
    version: str
    database: str
    port: int
    login: str  # the non-admin integration user
    key: str
    key_expires: str
    admin_key: str
    spec: dict[str, Any]
    log_file: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def _psql(self, sql: str, database: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": self.spec["pg_password"]}
        command = [
            "psql", "-h", "127.0.0.1", "-p", str(self.spec["pg_port"]), "-U",
            self.spec["pg_user"], "-d", database, "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql,
        ]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def create_database(self) -> None:
        self.drop_database()
        self._psql(f'CREATE DATABASE "{self.database}" TEMPLATE "{self.spec["template"]}"')
        filestore = Path(self.spec["data_dir"]) / "filestore"
        source = filestore / self.spec["template"]
        if source.is_dir():
            shutil.copytree(source, filestore / self.database)

    def drop_database(self) -> None:
        self._psql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        shutil.rmtree(Path(self.spec["data_dir"]) / "filestore" / self.database, ignore_errors=True)

    def _conf(self) -> Path:
        conf = self.log_file.with_suffix(".conf")
        conf.write_text(
            "[options]\n"
            f"db_host = 127.0.0.1\ndb_port = {self.spec['pg_port']}\n"
            f"db_user = {self.spec['pg_user']}\ndb_password = {self.spec['pg_password']}\n"
            f"addons_path = {self.spec['addons']}\ndata_dir = {self.spec['data_dir']}\n"
            f"http_interface = 127.0.0.1\nhttp_port = {self.port}\ngevent_port = {free_port()}\n"
            "workers = 0\nmax_cron_threads = 0\n"
            f"dbfilter = ^{self.database}$\nlist_db = False\n"
            "log_level = info\n"
            f"logfile = {self.log_file}\n"
        )
        return conf

    def start(self) -> None:
        """Start odoo-bin and wait until it answers (a few seconds on a copied template)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        command = [
            self.spec["python"], self.spec["odoo_bin"], "-c", str(self._conf()),
            "-d", self.database, "--no-database-list",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Odoo {self.version} exited: {self.tail()}")
            if self._answers():
                return
            time.sleep(0.3)
        raise RuntimeError(f"Odoo {self.version} did not answer in {START_TIMEOUT:.0f} s")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/web/login", timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def start_servers(log_dir: Path, versions: tuple[str, ...] = VERSIONS) -> list[OdooServer]:
    specs = json.loads((cache_dir() / "servers.json").read_text())["servers"]
    servers = []
    for spec in (s for s in specs if s["version"] in versions):
        major = spec["version"].split(".")[0]
        server = OdooServer(
            version=spec["version"],
            database=f"floorgate_test{major}_{os.getpid()}",
            port=free_port(),
            login=spec["login"],
            key=spec["key"],
            key_expires=spec["expires"],
            admin_key=spec["admin_key"],
            spec=spec,
            log_file=log_dir / f"odoo{major}.log",
        )
        drop_stale_databases(server)
        server.create_database()
        server.start()
        servers.append(server)
    return servers


def drop_stale_databases(server: OdooServer) -> None:
    """Databases of earlier sessions that died before they dropped theirs."""
    major = server.version.split(".")[0]
    names = server._psql(
        f"SELECT datname FROM pg_database WHERE datname LIKE 'floorgate\\_test{major}\\_%'"
    ).split()
    for name in names:
        if not alive(int(name.rsplit("_", 1)[1])):
            server._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_servers(servers: list[OdooServer]) -> None:
    for server in servers:
        server.stop()
        with contextlib.suppress(subprocess.CalledProcessError):
            server.drop_database()
