"""Counts from people: the tally page staff use at the counter, in the van or on foot.

The page (``/tally``, hub/static/tally.js) keeps each tap in the browser and sends, for each
person, channel and hour, a bucket with an id and the hour's counts so far; the hub keeps the
bucket's latest counts (a resend replaces, so it counts once) and nothing else: no tap's
time, no time a bucket was sent. This module reads what the page sends, names the products it
offers, and draws their pictograms (the machine's own drawings, hal.graphic).
"""

from __future__ import annotations

import functools
import io
import re
from datetime import datetime, timedelta
from typing import Any

from controller.clock import iso, parse_iso
from controller.config import PRODUCT_ID
from hub.store import Tally

TALLY_ID = re.compile(r"[A-Za-z0-9-]{8,64}")
HOUR = re.compile(r"(20[2-9][0-9])-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:00:00Z")
MAX_BUCKETS = 200  # in one send (a phone a week without signal, every hour: 168)
MAX_PRODUCTS = 50
MAX_COUNT = 1_000  # packs of one product in one hour by one person
KEEP_DAYS = 90  # a phone left without signal this long still sends; older is refused
AHEAD = timedelta(minutes=65)  # a phone's clock a little fast: its hour may not have begun
PICTOGRAM_PX = 96


class BadTally(ValueError):
    """A bucket the hub will not keep: ``field`` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def tally_of(data: Any, channels: tuple[str, ...], now: datetime,
             offered: set[str] | None = None) -> Tally:
    """The bucket ``data`` (one item of the page's ``buckets``) describes, or
    :class:`BadTally` naming the field: an id, a configured channel, an hour starting on the
    hour (UTC) neither ahead of ``now`` (a fast phone's next hour aside) nor more than
    :data:`KEEP_DAYS` behind, whole counts of the products ``offered``, and the version."""
    if not isinstance(data, dict):
        raise BadTally("bucket", "must be an object with id, channel, start, end, counts and "
                                 "version")
    extra = set(data) - {"id", "channel", "start", "end", "counts", "version"}
    if extra:
        raise BadTally(_said(sorted(extra)[0]), "is not part of a tally bucket")
    tally_id = data.get("id")
    if not isinstance(tally_id, str) or not TALLY_ID.fullmatch(tally_id):
        raise BadTally("id", "must be 8 to 64 letters, digits and '-'")
    channel = data.get("channel")
    if channel not in channels:
        raise BadTally("channel", f"must be one of {', '.join(channels)}")
    start, end = data.get("start"), data.get("end")
    if not isinstance(start, str) or not HOUR.fullmatch(start):
        raise BadTally("start", "must be the start of an hour in UTC, such as "
                                "2026-12-01T14:00:00Z")
    try:
        began = parse_iso(start)  # the year is 2020 to 2099 (HOUR): no overflow below
    except ValueError:
        raise BadTally("start", "is not a real time") from None
    if end != iso(began + timedelta(hours=1)):
        raise BadTally("end", "must be an hour after start")
    if began > now + AHEAD:
        raise BadTally("start", "is ahead of the hub's clock (is the phone's clock right?)")
    if began < now - timedelta(days=KEEP_DAYS):
        raise BadTally("start", f"is more than {KEEP_DAYS} days ago")
    counts = data.get("counts")
    if not isinstance(counts, dict) or len(counts) > MAX_PRODUCTS:
        raise BadTally("counts", f"must be an object of at most {MAX_PRODUCTS} products and "
                                 "their packs")
    for product, n in counts.items():
        if not PRODUCT_ID.fullmatch(product) or not product.isascii():
            raise BadTally(f"counts.{_said(product)}", 'must be a product id like '
                                                       '"syringe-1ml"')
        if offered is not None and product not in offered:
            raise BadTally(f"counts.{product}", "is not a product the tally offers")
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_COUNT:
            raise BadTally(f"counts.{product}", f"must be a whole number from 0 to {MAX_COUNT}")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2 ** 53:
        raise BadTally("version", "must be a whole number from 1, one more at each change")
    return Tally(tally_id, channel, start, end, dict(counts), version)


def _said(name: str) -> str:
    """A name from outside, as an answer may say it: plain if it is plain ASCII, else escaped
    (a lone surrogate cannot be written in the JSON answer)."""
    name = name[:40]
    return name if name.isascii() and name.isprintable() else ascii(name)


def products(config: Any, names: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(id, name, pictogram)`` of the products the page offers: ``[tally] products`` in its
    order, else every product the machines stock or ``[reports] units`` names, by name."""
    from hal.graphic import kind_of

    if config.tally_products:
        chosen = list(config.tally_products)
    else:
        chosen = sorted(set(names) | set(config.units), key=lambda p: (names.get(p, p), p))
    return [(p, names.get(p, p), kind_of(p)) for p in chosen]


KINDS = ("syringe", "foil", "spoon", "filter", "ampoule", "naloxone", "plaster", "sharps-bin",
         "test", "condom", "pack")


@functools.cache
def pictogram_png(kind: str) -> bytes:
    """The machine's drawing of ``kind`` (one of :data:`KINDS`) as a PNG, light on black as
    on its screen, so a person knows the button from the machine."""
    from PIL import Image, ImageDraw

    from hal.graphic import BACKGROUND, pictogram

    image = Image.new("RGB", (PICTOGRAM_PX, PICTOGRAM_PX), BACKGROUND)
    pictogram(ImageDraw.Draw(image), kind, 8, 8, PICTOGRAM_PX - 16)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()
