"""A real PostgreSQL server (Debian's ``postgresql`` package) that the tests start in a
folder of their own, on a free loopback port, and throw away: nothing shared with a server
the machine may already run.

As root, the server runs as the package's ``postgres`` user (initdb refuses root); as
anyone else, as the user running the tests. One server per test process; each test gets a fresh database.
"""

from __future__ import annotations

import getpass
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.broker import free_port

BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), None)
WHY_NOT = ("PostgreSQL is not installed (scripts/setup --with-broker installs Debian's "
           "postgresql); the hub's PostgreSQL tests are skipped") if BIN is None else None


def _as_server_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


if BIN is not None and os.geteuid() == 0:
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        WHY_NOT = "running as root with no postgres user to run PostgreSQL as; skipped"


class Postgres:
    """``initdb`` into a new folder and ``pg_ctl start`` on a free port, trust on loopback."""

    def __init__(self, durable: bool = False) -> None:
        """``durable``: commits reach the disk, as on a real server (the benchmark); tests
        leave that out, for speed."""
        self.folder = Path(tempfile.mkdtemp(prefix="nspvend-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        owner = "postgres" if os.geteuid() == 0 else getpass.getuser()
        shutil.chown(self.folder, owner)
        run = _as_server_user()
        subprocess.run([*run, f"{BIN}/initdb", "-D", str(self.data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                       check=True, capture_output=True, text=True)
        options = (f"-c port={self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.folder} -c max_connections=200")
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self.options = options
        subprocess.run([*run, f"{BIN}/pg_ctl", "-D", str(self.data), "-o", options, "-w",
                        "-l", str(self.folder / "log"), "start"],
                       check=True, capture_output=True, text=True)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        """A new, empty database: its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def pause(self) -> None:
        """Stop the server, keeping its data (``resume`` starts it again on the same port)."""
        subprocess.run([*_as_server_user(), f"{BIN}/pg_ctl", "-D", str(self.data), "-m", "fast",
                        "-w", "stop"], check=True, capture_output=True)

    def resume(self) -> None:
        subprocess.run([*_as_server_user(), f"{BIN}/pg_ctl", "-D", str(self.data), "-o",
                        self.options, "-w", "-l", str(self.folder / "log"), "start"],
                       check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([*_as_server_user(), f"{BIN}/pg_ctl", "-D", str(self.data), "-m", "immediate",
                        "-w", "stop"], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)
