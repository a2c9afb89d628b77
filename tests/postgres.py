"""A throw-away PostgreSQL server on loopback for the distributed-search tests.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user (``runuser``).
Outside CI the tests skip when no server binaries are installed; with CI=true they must run
(``.ci/postgres.sh`` installs them). The database-fault tests stop and start the same server
(same folder, same port) through ``PostgresServer``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import free_port


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """One server in a temporary folder, on a fixed loopback port, that a test may stop and start again."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir, self.root, self.port = bindir, root, free_port()
        self.data = root / "data"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str, check: bool = True) -> None:
        done = subprocess.run([*self.as_user, *cmd], capture_output=True, cwd=self.root)
        if check and done.returncode:
            log = self.root / "log"
            raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {done.returncode}): {done.stderr.decode()[-800:]}"
                               + (f"\nserver log: {log.read_text()[-800:]}" if log.exists() else ""))

    def init(self) -> None:
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start_on_a_free_port(self, tries: int = 3) -> None:
        """The first start: ``free_port`` only says nothing listened a moment ago, and another test run on the
        machine may bind the port first, so a failed start moves to another port."""
        for attempt in range(tries):
            try:
                return self.start()
            except RuntimeError:
                if attempt == tries - 1:
                    raise
                self.port = free_port()
                self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop: ``fast`` ends every session (clients see "terminating connection due to administrator
        command"), ``immediate`` is a crash of the server."""
        pg_ctl = str(self.bindir / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop", check=mode != "immediate")


@contextmanager
def postgres(start: bool = True) -> Iterator[PostgresServer]:
    """A new server (started unless ``start=False``); stopped and deleted afterwards."""
    bindir = _bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server binaries are missing in CI (.ci/postgres.sh should install them)")
        pytest.skip("no PostgreSQL server installed (apt-get install postgresql)")
    server = PostgresServer(bindir, Path(tempfile.mkdtemp(prefix="automl-dnn-pg-")))
    try:
        server.init()
        if start:
            server.start_on_a_free_port()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server in a temporary folder; yield its SQLAlchemy URL; stop and delete it afterwards."""
    with postgres() as server:
        yield server.url
