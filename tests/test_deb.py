"""The machine's Debian package (scripts/build-deb): the same bytes from the same input, and
installed, upgraded, removed and purged with dpkg on this machine, keeping the config, the
counts and the user. It runs only where it cannot harm a real installation: as root, with no
nspvend package, /opt/nspvend, /etc/nspvend or /var/lib/nspvend here before it (a CI
container, a developer's throwaway box); it leaves the machine as it found it.

systemd is not running here (a container), so the restart on upgrade (postinst's
``systemctl try-restart``, a graceful stop between vends) is not exercised: the daemon's
graceful stop on SIGTERM is tested in tests/test_daemon.py."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLACES = [Path("/opt/nspvend"), Path("/etc/nspvend"), Path("/var/lib/nspvend")]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "installs a package with dpkg: needs root"
    for tool in ("dpkg", "dpkg-deb", "fakeroot", "/usr/bin/python3"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not (ROOT / ".venv" / "wheelhouse").is_dir():
        return "run scripts/setup first: it fetches the locked packages the build takes"
    if subprocess.run(["dpkg-query", "-W", "nspvend"], capture_output=True).returncode == 0:
        return "an nspvend package is installed here: not touching it"
    if any(p.exists() for p in PLACES):
        return "nspvend is installed here (from a clone?): not touching it"
    return None


needs_dpkg = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


def build(out: Path, version: str | None = None) -> Path:
    args = [str(ROOT / "scripts" / "build-deb"), "--out", str(out)]
    if version:
        args += ["--version", version]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "SOURCE_DATE_EPOCH": "1764547200"})
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def dpkg(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dpkg", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def version_of_installed() -> str:
    return subprocess.run(["/usr/bin/nspvend", "--version"], capture_output=True, text=True,
                          timeout=60).stdout.strip()


@needs_dpkg
def test_the_package_is_reproducible_and_upgrades_and_removes_keeping_the_data(tmp_path):
    first = build(tmp_path / "a")
    again = build(tmp_path / "b")
    assert first.name == again.name and first.name.startswith("nspvend_0.")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(
        again.read_bytes()).digest()  # same input, same bytes
    current = first.name.split("_")[1]
    newer = build(tmp_path / "c", current + ".1")
    listing = subprocess.run(["dpkg-deb", "--contents", str(first)], capture_output=True,
                             text=True).stdout
    assert "root/root" in listing and str(tmp_path) not in listing
    assert "./lib/systemd/system/nspvend.service" in listing
    assert ".pyc" not in listing and "direct_url.json" not in listing
    if shutil.which("lintian"):
        lint = subprocess.run(["lintian", "--suppress-tags", "file-in-unusual-dir",
                               str(first)], capture_output=True, text=True, timeout=300)
        assert not [line for line in lint.stdout.splitlines() if line.startswith("E:")], \
            lint.stdout

    groups_before = {g.gr_name for g in grp.getgrall()}
    user_before = "nspvend" in {p.pw_name for p in pwd.getpwall()}
    try:
        installed = dpkg("-i", str(first))
        assert installed.returncode == 0, installed.stderr
        assert "wrote an example /etc/nspvend/config.toml" in installed.stdout
        assert version_of_installed() == f"nspvend {current}"
        user = pwd.getpwnam("nspvend")
        assert user.pw_shell == "/usr/sbin/nologin"
        for group in ("gpio", "dialout", "nspvend-staff"):
            assert "nspvend" in grp.getgrnam(group).gr_mem
        data = Path("/var/lib/nspvend")
        assert data.stat().st_uid == user.pw_uid and (data.stat().st_mode & 0o777) == 0o700
        check = subprocess.run(["/usr/bin/nspvend", "check-config",
                                str(ROOT / "simulator" / "demo.toml")],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
        assert list(Path("/opt/nspvend/venv/lib").rglob("*.pyc"))  # compiled on the machine

        # staff's config and the machine's counts, which no upgrade or removal may touch
        config = Path("/etc/nspvend/config.toml")
        config.write_text(config.read_text() + "\n# edited by the hub's staff\n")
        edited = config.read_text()
        counts = data / "nspvend.db"
        with sqlite3.connect(counts) as db:
            db.execute("CREATE TABLE kept (packs INTEGER)")
            db.execute("INSERT INTO kept VALUES (42)")

        upgraded = dpkg("-i", str(newer))
        assert upgraded.returncode == 0, upgraded.stderr
        assert "wrote an example" not in upgraded.stdout
        assert version_of_installed() == f"nspvend {current}.1"
        assert config.read_text() == edited

        removed = dpkg("--remove", "nspvend")
        assert removed.returncode == 0, removed.stderr
        assert not Path("/opt/nspvend/venv").exists() and not Path("/usr/bin/nspvend").exists()
        assert config.read_text() == edited
        with sqlite3.connect(counts) as db:
            assert db.execute("SELECT packs FROM kept").fetchall() == [(42,)]
        assert pwd.getpwnam("nspvend").pw_uid == user.pw_uid

        purged = dpkg("--purge", "nspvend")
        assert purged.returncode == 0, purged.stderr
        assert "kept /var/lib/nspvend" in purged.stdout
        assert counts.exists() and config.read_text() == edited  # not without asking
    finally:
        dpkg("--purge", "nspvend", NSPVEND_PURGE="all")
        for place in PLACES:
            shutil.rmtree(place, ignore_errors=True)
        if not user_before:
            subprocess.run(["userdel", "nspvend"], capture_output=True)
        for group in ("nspvend", "gpio", "nspvend-staff"):
            if group not in groups_before:
                subprocess.run(["groupdel", group], capture_output=True)


def tiny_deb(folder: Path, version: str) -> Path:
    """A package named nspvend with nothing in it: what publish-deb does not look into."""
    root = folder / f"tiny-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: nspvend\nVersion: {version}\nArchitecture: arm64\nMaintainer: t <t@t>\n"
        "Description: test\n test\n")
    out = folder / f"nspvend_{version}_arm64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(out)],
                   check=True, capture_output=True)
    return out


@pytest.mark.skipif(shutil.which("reprepro") is None or shutil.which("gpg") is None,
                    reason="needs reprepro and gpg (scripts/setup --with-broker installs them)")
def test_the_hub_box_publishes_packages_signed_and_keeps_each_for_a_way_back(tmp_path):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                    "nspvend updates <updates@hub.test>", "ed25519", "sign", "never"],
                   check=True, capture_output=True, env=env)
    repo = tmp_path / "apt"
    for version in ("0.2.0", "0.3.0"):
        done = subprocess.run([str(ROOT / "scripts" / "publish-deb"), "--repo", str(repo),
                               "--key", "updates@hub.test", str(tiny_deb(tmp_path, version))],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
    assert "nspvend 0.3.0" in done.stderr  # what the repository offers now: the newest
    release = (repo / "dists" / "bookworm" / "Release").read_text()
    assert "Origin: nspvend" in release and "Codename: bookworm" in release  # the pattern
    key = tmp_path / "nspvend-archive.gpg"
    key.write_bytes(subprocess.run(["gpg", "--export", "updates@hub.test"], check=True,
                                   capture_output=True, env=env).stdout)
    verified = subprocess.run(["gpgv", "--keyring", str(key),
                               str(repo / "dists" / "bookworm" / "InRelease")],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr  # signed by the hub's key
    assert sorted(p.name for p in (repo / "archive").iterdir()) == [
        "nspvend_0.2.0_arm64.deb", "nspvend_0.3.0_arm64.deb"]  # a way back for one machine
    unknown = subprocess.run([str(ROOT / "scripts" / "publish-deb"), "--repo", str(repo),
                              str(tmp_path / "missing.deb")], capture_output=True, text=True)
    assert unknown.returncode == 2 and "no such file" in unknown.stderr
