"""Millisecond ticks: MicroPython's own, or the same made from CPython's monotonic clock."""

try:
    from time import ticks_diff, ticks_ms  # MicroPython
except ImportError:  # CPython
    import time

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b
