"""A small disk for a daemon's database that a test can fill up, as an SD card fills."""

from __future__ import annotations

import subprocess
from pathlib import Path


class Disk:
    """A 32 MB tmpfs for the SQLite file (its WAL alone grows to 4 MB), which a ballast file can fill up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(path)],
                                      capture_output=True).returncode == 0
        self.ballast = path / "ballast"

    def fill(self) -> None:
        with open(self.ballast, "wb", buffering=0) as f:
            for chunk in (65536, 512):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError:
                    pass

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
