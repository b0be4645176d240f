"""The board link's frames: one line of ASCII words with a CRC-16, e.g. ``V 42 3*1A2F``.

Plain MicroPython and CPython alike: the board and the host share this module.
A line that is too long, has no ``*``, or fails its CRC is dropped whole; the
next newline resynchronises. See firmware_py/README.md for the messages.
"""

MAX_FRAME = 200


def crc16(data):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of ``data`` (bytes)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def encode(*words):
    """One frame, as bytes, from words (str or int): ``encode("V", 42, 3)``."""
    payload = " ".join(str(w) for w in words).encode()
    return payload + b"*" + ("%04X" % crc16(payload)).encode() + b"\n"


def decode(line):
    """The words of one frame line (bytes, newline stripped), or None if it is damaged."""
    if len(line) > MAX_FRAME:
        return None
    star = line.rfind(b"*")
    if star < 1 or len(line) - star != 5:
        return None
    payload = line[:star]
    try:
        if int(line[star + 1:], 16) != crc16(payload):
            return None
        text = payload.decode()
    except (ValueError, UnicodeError):
        return None
    return text.split(" ")


class Framer:
    """Collects bytes and yields whole, intact frames; damaged lines are counted and dropped."""

    def __init__(self):
        self.buffer = b""
        self.dropped = 0

    def feed(self, data):
        """Add ``data`` (bytes); return the list of frames (lists of words) now complete."""
        self.buffer += data
        frames = []
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_FRAME:
                    self.buffer = b""  # garbage without a newline: start afresh
                    self.dropped += 1
                return frames
            line = self.buffer[:end].rstrip(b"\r")
            self.buffer = self.buffer[end + 1:]
            if not line:
                continue
            words = decode(line)
            if words is None:
                self.dropped += 1
            else:
                frames.append(words)


def hex_text(text):
    """Display text made safe for a frame word."""
    return "".join("%02x" % b for b in text.encode())


def unhex_text(word):
    data = bytes(int(word[i:i + 2], 16) for i in range(0, len(word), 2))
    return data.decode()
