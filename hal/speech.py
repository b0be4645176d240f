"""The machine's voice: espeak-ng (Debian's package) through the sound output, which a
headphone jack is just one of.

Speaking never delays a vend: :meth:`Speaker.say` only hands the words to a thread of
their own. The voice follows the screen: newer words cut what is being said, and
:meth:`Speaker.hush` (a new screen) cuts it too, so nothing is said longer than its screen
stays. With ``output`` a folder, each utterance is written there as a WAV file instead
(tests, and checking how a voice sounds without a speaker).
"""

from __future__ import annotations

import logging
import queue
import subprocess
import threading
from pathlib import Path

from hal.settings import SpeechSettings

log = logging.getLogger(__name__)


class Speaker:
    def __init__(self, settings: SpeechSettings) -> None:
        self.settings = settings
        self._waiting: queue.Queue = queue.Queue(maxsize=1)
        self._count = 0
        self._stop = threading.Event()
        self.spoken = 0
        self.last = ""
        self.failed: str | None = None
        self._done = threading.Condition()
        self._busy = False
        self._proc: subprocess.Popen | None = None  # espeak-ng saying something now
        self._proc_lock = threading.Lock()
        self.hushed = 0
        self._thread = threading.Thread(target=self._run, name="speech", daemon=True)
        self._thread.start()

    def say(self, text: str, voice: str, volume: int) -> None:
        """Say ``text`` in espeak-ng's ``voice`` at ``volume`` (0..200), soon, cutting what is
        being said; never waits."""
        item = (text, voice, volume)
        self.last = text
        self._cut()
        while True:
            try:
                self._waiting.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._waiting.get_nowait()  # what was waiting is no longer on the screen
                except queue.Empty:
                    pass

    def hush(self) -> None:
        """The screen changed: stop saying the old one, and forget what waited to be said."""
        try:
            self._waiting.get_nowait()
        except queue.Empty:
            pass
        self._cut()

    def _cut(self) -> None:
        with self._proc_lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.terminate()
                self.hushed += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._done:
                    text, voice, volume = self._waiting.get(timeout=0.2)
                    self._busy = True
            except queue.Empty:
                continue
            try:
                command = [self.settings.espeak, "-v", voice, "-a", str(volume)]
                if self.settings.output != "sound":
                    self._count += 1
                    folder = Path(self.settings.output)
                    folder.mkdir(parents=True, exist_ok=True)
                    command += ["-w", str(folder / f"{self._count:04d}-{voice}.wav")]
                with self._proc_lock:
                    self._proc = subprocess.Popen([*command, "--", text],
                                                  stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.PIPE)
                _, error = self._proc.communicate(timeout=60)
                code = self._proc.returncode
                if code not in (0, -15):  # -15: cut short by a newer screen (SIGTERM)
                    raise subprocess.CalledProcessError(code, self.settings.espeak,
                                                        stderr=error)
                with self._done:
                    self.spoken += 1
            except (OSError, subprocess.SubprocessError) as e:
                if self.failed is None:  # said once: a missing voice must not fill the log
                    log.warning("cannot speak with %s: %s", self.settings.espeak, e)
                with self._done:
                    self.failed = str(e)
            finally:
                with self._proc_lock:
                    if self._proc is not None and self._proc.poll() is None:
                        self._proc.kill()
                    self._proc = None
                with self._done:
                    self._busy = False
                    self._done.notify_all()

    def wait_spoken(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` utterances have been spoken in all (False if one failed, or
        on ``timeout``): for tests and tools, never for the machine itself."""
        with self._done:
            self._done.wait_for(lambda: self.spoken >= count or self.failed is not None, timeout)
            return self.spoken >= count

    def close(self, timeout: float = 5.0) -> None:
        """Stop, once what is being said and what waits to be said are done (at most
        ``timeout`` seconds)."""
        with self._done:
            self._done.wait_for(lambda: not self._busy and self._waiting.empty(), timeout)
        self._stop.set()
        self._thread.join(timeout)
