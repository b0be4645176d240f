"""The board link: every message declared once, and its frames (ASCII words with a CRC-16).

Plain MicroPython and CPython alike: the board (``board.py``), the board simulator and
the host (``hal/serial.py``) all build and read messages from :data:`MESSAGES`, by name
and with named fields, as Klipper declares each command's format once beside its handler.
A frame is one line, e.g. ``V 42 3*B6DA``; a line that is too long, has no ``*``, or fails
its CRC is dropped whole and the next newline resynchronises. The hello's answer carries
:data:`PROTOCOL` as its first field after the id, at that place in every version, so a
host and a board that speak different versions refuse each other instead of misreading.
firmware_py/README.md shows the same table (a test keeps them equal).
"""

MAX_FRAME = 200
PROTOCOL = 2  # the link protocol's version (1: before messages were declared by name)

# letter, name, fields. The first field numbers the message: a vend's sequence number, a
# request's id, an event's k. "?" marks a field that may be left off the end; "*" takes
# every word that is left.
MESSAGES = (
    # host -> board
    ("V", "vend", ("seq", "slot", "boot?")),
    ("R", "recall", ("seq",)),
    ("H", "hello", ("id",)),
    ("K", "ack", ("k",)),
    ("L", "light", ("id", "state")),
    ("T", "text", ("id", "lines*")),
    ("G", "glyph", ("id", "code", "rows*")),
    # board -> host
    ("A", "accepted", ("seq",)),
    ("D", "done", ("seq", "outcome")),
    ("B", "busy", ("seq",)),
    ("N", "refused", ("id", "why")),
    ("U", "unknown", ("seq", "boot", "oldest")),
    ("h", "board", ("id", "protocol", "boot", "slots", "door", "bin", "temp", "firmware",
                    "highest")),
    ("k", "done_ok", ("id",)),
    ("E", "event", ("k", "boot", "what", "args*")),
)
_BY_NAME = {}
_BY_LETTER = {}
for _letter, _name, _fields in MESSAGES:
    _BY_NAME[_name] = (_letter, _fields)
    _BY_LETTER[_letter] = (_name, _fields)


def message(name, **fields):
    """One frame of message ``name`` with its named fields (``message("vend", seq=42,
    slot=3)``); trailing ``?`` fields may be left out, a ``*`` field is a list of words."""
    letter, names = _BY_NAME[name]
    words = [letter]
    for field in names:
        key = field.rstrip("?*")
        value = fields.pop(key, None)
        if field.endswith("*"):
            words.extend(value or ())
        elif value is not None:
            words.append(value)
        elif not field.endswith("?"):
            raise ValueError("%s: %s is missing" % (name, key))
    if fields:
        raise ValueError("%s has no field %s" % (name, ", ".join(fields)))
    return encode(*words)


def number_field(name):
    """The name of message ``name``'s first field: the number replies are matched by."""
    return _BY_NAME[name][1][0].rstrip("?*")


def read(words):
    """``(name, fields)`` of a decoded frame: ``fields`` maps each declared field to its word
    (a ``*`` field to a list); ``(None, None)`` for an unknown letter and ``(name, None)``
    when required fields are missing."""
    entry = _BY_LETTER.get(words[0]) if words else None
    if entry is None:
        return None, None
    name, names = entry
    rest = words[1:]
    fields = {}
    for i, field in enumerate(names):
        if field.endswith("*"):
            fields[field[:-1]] = rest[i:]
            break
        key = field[:-1] if field.endswith("?") else field
        if i < len(rest):
            fields[key] = rest[i]
        elif field.endswith("?"):
            fields[key] = None
        else:
            return name, None
    return name, fields


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
