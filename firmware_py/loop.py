"""The board's main loop: read frames from the link, run the board, feed the watchdog.

Shared by the real board (``main.py``), the bench under the MicroPython unix
port (``bench.py``) and the board simulator under CPython.
"""

import select
import time

from firmware_py.protocol import Framer

ERROR_MASK = select.POLLHUP | select.POLLERR


def serve(board, link, others=(), watchdog=None, running=None, pollable=None):
    """Run ``board`` on ``link`` (binary ``read``/``write``) until ``running()`` says stop.

    ``pollable`` is what to poll for the link (the link itself by default);
    ``others`` are ``(file, on_readable)`` pairs polled alongside it.
    Every output is switched off when the loop ends, however it ends.
    """
    source = link if pollable is None else pollable
    poller = select.poll()
    poller.register(source, select.POLLIN)
    handlers = {}
    for f, handler in others:
        poller.register(f, select.POLLIN)
        handlers[id(f)] = (f, handler)
    framer = Framer()
    board.start()
    try:
        while running is None or running():
            if watchdog is not None:
                watchdog.feed()
            for entry in poller.poll(1):
                f, flags = entry[0], entry[1]
                if flags & ERROR_MASK and not flags & select.POLLIN:
                    time.sleep_ms(10) if hasattr(time, "sleep_ms") else time.sleep(0.01)
                    continue
                if f is source or f == _fileno(source):
                    _read_link(link, framer, board)
                else:
                    for other, handler in handlers.values():
                        if f is other or f == _fileno(other):
                            handler()
            board.poll()
    finally:
        board.stop()


def _fileno(f):
    try:
        return f.fileno()
    except (AttributeError, OSError):
        return -1


def _read_link(link, framer, board):
    try:
        data = link.read(1)
    except OSError:
        return  # the other end went away for a moment (host closed the port)
    if data:
        for words in framer.feed(data):
            board.receive(words)
