"""The demo: the daemon on the simulator, driven from a terminal or a pipe."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time

import pytest

from tests.daemon_process import ROOT, nspvend, wait_until


def test_demo_from_a_pipe_vends_on_a_key_and_signposts(tmp_path):
    result = nspvend("demo", "--fast", "--data", str(tmp_path), input="1\nj3 2\n2\nq\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "display | Press a button for a pack." in out
    assert out.count("display | Thank you.") == 1 and "display | Take your pack below." in out
    assert "display | Naloxone saves lives: press 6 for a kit." in out
    assert "display | Sorry, cannot give foil pack right now." in out  # slot 3 jammed


def read_until(fd: int, *patterns: str, timeout: float = 20) -> str:
    """Read a pty until every one of ``patterns`` shows up (escape codes removed)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))
        if all(pattern in text for pattern in patterns):
            return text
    raise AssertionError(f"{patterns!r} never all appeared; screen was:\n{seen.decode(errors='replace')}")


def test_demo_in_a_terminal_vends_when_a_key_is_pressed(tmp_path):
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "controller", "demo", "--fast", "--data",
                             str(tmp_path)], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                            cwd=ROOT)
    os.close(slave)
    try:
        # a frame can come in more than one read: wait for the buttons below the display too
        read_until(master, "Press a button for a pack.", "[1] 1ml syringes x10")
        os.write(master, b"1")
        read_until(master, "Take your pack below.")
        os.write(master, b"d")
        read_until(master, "Being restocked.")
        os.write(master, b"q")
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_demo_language_and_say_it_again_keys(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "controller", "demo", "--fast", "--data",
                             str(tmp_path)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write("7\n8\n")  # Turkish, and say it: the next screen would cut the voice,
    proc.stdin.flush()  # so the next key waits until it has spoken
    wait_until(lambda: list((tmp_path / "speech").glob("*-tr.wav")), "a Turkish voice")
    out, err = proc.communicate("2\nq\n", timeout=60)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert result.returncode == 0, result.stderr
    assert "display | Ücretsiz. İsim sorulmaz. Limit yok." in result.stdout
    assert "display | Teşekkürler." in result.stdout
    assert list((tmp_path / "speech").glob("*-tr.wav")), "the voice said nothing in Turkish"
