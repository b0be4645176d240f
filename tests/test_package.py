"""The package stands on its own: the wheel built from this checkout, installed in a fresh
virtualenv outside it with nothing but the locked packages, runs, and finds its message
catalogs, templates and static files where it was installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.daemon_process import ROOT

WHEELHOUSE = ROOT / ".venv" / "wheelhouse"  # scripts/setup fetched the locked packages there
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
SKIP = {".git", ".venv", ".venv-mutate", "mutants", "build", "__pycache__", ".pytest_cache",
        ".hypothesis", ".ruff_cache", "demo-data"}


def run(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "NSPVEND"))}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.mark.skipif(not WHEELHOUSE.is_dir(), reason="scripts/setup fetches the locked packages")
def test_the_wheel_installed_in_a_fresh_virtualenv_runs_with_what_it_carries(tmp_path):
    source = tmp_path / "source"  # a copy: the build writes nothing into the checkout
    shutil.copytree(ROOT, source, ignore=lambda folder, names: [
        n for n in names if n in SKIP or n.endswith(".egg-info")])
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "-q", "-w", str(tmp_path / "dist"), str(source), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("nspvend-*.whl")
    assert wheel.name.startswith(f"nspvend-{VERSION}-")

    elsewhere = tmp_path / "elsewhere"  # nothing of the checkout beside it
    elsewhere.mkdir()
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", str(venv), cwd=elsewhere).returncode == 0
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
           "--find-links", str(WHEELHOUSE)]
    deps = run(*pip, "--require-hashes", "-r", str(ROOT / "requirements" / "hub.lock"),
               cwd=elsewhere)
    assert deps.returncode == 0, deps.stderr
    installed = run(*pip, "--no-deps", str(wheel), cwd=elsewhere)
    assert installed.returncode == 0, installed.stderr
    nspvend = str(venv / "bin" / "nspvend")

    version = run(nspvend, "--version", cwd=elsewhere)
    assert version.returncode == 0 and version.stdout.strip() == f"nspvend {VERSION}"
    example = shutil.copy(ROOT / "systemd" / "config.example.toml", elsewhere / "nspvend.toml")
    checked = run(nspvend, "check-config", str(example), cwd=elsewhere)
    assert checked.returncode == 0 and ": ok (" in checked.stdout, checked.stderr
    screens = run(nspvend, "screens", "--lang", "tr", cwd=tmp_path)  # the installed catalog
    assert screens.returncode == 0, screens.stderr
    assert "Teşekkürler" in screens.stdout or "Tesekkurler" in screens.stdout, screens.stdout
    hub = run(nspvend, "hub", "--help", cwd=elsewhere)
    assert hub.returncode == 0 and "run the hub" in hub.stdout, hub.stderr
    # the hub's pages: templates and static files from the installed package, not a checkout
    found = run(str(venv / "bin" / "python"), "-c",
                "import hub, pathlib; here = pathlib.Path(hub.__file__).parent; "
                "print(len(list((here / 'templates').glob('*.html'))), "
                "len(list((here / 'static').iterdir())), here)", cwd=elsewhere)
    templates, static, where = found.stdout.split()
    assert int(templates) >= 5 and int(static) >= 1 and str(ROOT) not in where
