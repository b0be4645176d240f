"""The hub's tables and their versions: code, one step a version (as on the machine), for
SQLite (sqlite-utils' table creation) and the same in PostgreSQL's words."""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


def _v1(db: sqlite_utils.Database) -> None:
    db["machines"].create({
        "id": str, "first_heard": str, "last_heard": str, "availability": str,
        "availability_since": str, "state": str, "state_at": str, "stock": str, "stock_at": str,
        "last_pack": str,
    }, pk="id", if_not_exists=True)
    db["buckets"].create({"id": str, "machine": str, "start": str, "end": str,
                          "clock_synced": int, "received": str}, pk="id", if_not_exists=True)
    db["bucket_counts"].create({"bucket_id": str, "product": str, "confirmed": int,
                                "unconfirmed": int}, pk=("bucket_id", "product"),
                               if_not_exists=True)
    db["events"].create({"id": str, "machine": str, "ts": str, "type": str, "slot": int,
                         "product": str, "detail": str, "received": str}, pk="id",
                        if_not_exists=True)
    db["commands"].create({"id": str, "machine": str, "user": str, "sent": str, "command": str,
                           "answered": str, "ok": int, "answer": str}, pk="id",
                          if_not_exists=True)
    db["users"].create({"name": str, "role": str, "hash": str, "created": str}, pk="name",
                       if_not_exists=True)
    db["sessions"].create({"token": str, "user": str, "csrf": str, "created": str,
                           "seen": str}, pk="token", if_not_exists=True)
    db["login_failures"].create({"who": str, "failures": int, "last": str}, pk="who",
                                if_not_exists=True)
    db["alerts"].create({"machine": str, "type": str, "subject": str, "raised": str,
                         "cleared": str, "detail": str, "told": str},
                        pk=("machine", "type", "subject"), if_not_exists=True)
    db["deliveries"].create({"id": int, "route": int, "channel": str, "target": str,
                             "body": str, "created": str, "attempts": int, "next_try": str,
                             "done": str, "error": str}, pk="id", if_not_exists=True)
    # per machine and UTC day, added to as each new bucket is stored: reports read these
    db["daily_counts"].create({"machine": str, "day": str, "product": str, "confirmed": int,
                               "unconfirmed": int}, pk=("machine", "day", "product"),
                              if_not_exists=True)
    db["daily_cover"].create({"machine": str, "day": str, "seconds": float, "buckets": int},
                             pk=("machine", "day"), if_not_exists=True)
    db.execute("CREATE INDEX IF NOT EXISTS buckets_by_start ON buckets (start, machine)")
    db.execute("CREATE INDEX IF NOT EXISTS daily_by_day ON daily_counts (day)")
    db.execute("CREATE INDEX IF NOT EXISTS cover_by_day ON daily_cover (day)")
    db.execute("CREATE INDEX IF NOT EXISTS events_by_machine ON events (machine, ts)")
    db.execute("CREATE INDEX IF NOT EXISTS deliveries_waiting ON deliveries (done, next_try)")


def _v2(db: sqlite_utils.Database) -> None:
    # silence is kept on the machine (raised by its event, cleared by a later pack) so any
    # hub process can store it and the one that runs the alerts sees it
    db["machines"].add_column("silence", str)
    db["machines"].add_column("silence_at", str)


V3 = [  # what the hourly clearing out looks for, without reading every row
    "CREATE INDEX IF NOT EXISTS events_by_received ON events (received)",
    'CREATE INDEX IF NOT EXISTS commands_by_user ON commands ("user", sent)',
    "CREATE INDEX IF NOT EXISTS deliveries_by_created ON deliveries (created)",
]


def _v3(db: sqlite_utils.Database) -> None:
    for statement in V3:
        db.execute(statement)


def _v4(db: sqlite_utils.Database) -> None:
    # every alert raised, for the alerts page and staff's "I'm on it" (the alerts table keeps
    # only each condition's latest)
    db["alert_log"].create({"id": int, "machine": str, "type": str, "subject": str,
                            "detail": str, "raised": str, "cleared": str, "acked_by": str,
                            "acked_at": str}, pk="id", if_not_exists=True)
    for statement in V4:
        db.execute(statement)


V4 = [
    "CREATE INDEX IF NOT EXISTS alert_log_open ON alert_log (machine, type, subject, cleared)",
    "CREATE INDEX IF NOT EXISTS alert_log_raised ON alert_log (raised)",
    "INSERT INTO alert_log (machine, type, subject, detail, raised) SELECT machine, type,"
    " subject, detail, raised FROM alerts WHERE cleared IS NULL",
]
def _v5(db: sqlite_utils.Database) -> None:
    # machines staff enrolled (`nspvend hub machine add`), and ids heard that nobody did
    db["enrolled"].create({"id": str, "name": str, "area": str, "place": str, "key_file": str,
                           "enrolled": str}, pk="id", if_not_exists=True)
    db["asking"].create({"id": str, "first_heard": str, "last_heard": str}, pk="id",
                        if_not_exists=True)
    db.execute(V5_KNOWN)


# a hub that took every id before enrolment: the machines it has heard stay known
V5_KNOWN = ("INSERT INTO enrolled (id, name, enrolled) SELECT id, id, first_heard FROM machines"
            " WHERE id NOT IN (SELECT id FROM enrolled)")


def _v6(db: sqlite_utils.Database) -> None:
    # counts from people (the tally page): a bucket per person, channel and hour, its counts
    # replaced by each send of it (the page sends the hour's totals so far), never a tap's time
    db["tallies"].create({"id": str, "channel": str, "start": str, "end": str, "user": str,
                          "version": int}, pk="id", if_not_exists=True)
    db["tally_counts"].create({"tally_id": str, "product": str, "count": int},
                              pk=("tally_id", "product"), if_not_exists=True)
    for statement in V6:
        db.execute(statement)


V6 = ["CREATE INDEX IF NOT EXISTS tallies_by_start ON tallies (start, channel)",
      'CREATE INDEX IF NOT EXISTS tallies_by_user ON tallies ("user", start)',
      # who did what: the commands and acknowledgements of the last days, without every row
      "CREATE INDEX IF NOT EXISTS commands_by_sent ON commands (sent)",
      "CREATE INDEX IF NOT EXISTS alert_log_acked ON alert_log (acked_at)"]


def _v7(db: sqlite_utils.Database) -> None:
    # packs staff took out past their date (a machine's expired_removed event): the reports'
    # waste, kept after the events themselves are cleared out
    db["expired_removals"].create({"event_id": str, "machine": str, "ts": str, "product": str,
                                   "packs": int}, pk="event_id", if_not_exists=True)
    db.execute(V7)


V7 = "CREATE INDEX IF NOT EXISTS expired_by_ts ON expired_removals (ts)"


def _v8(db: sqlite_utils.Database) -> None:
    # per machine and UTC month, as the daily roll-ups: a year's report adds up twelve rows a
    # machine and product, not 365 (filled from the daily ones on upgrade)
    db["monthly_counts"].create({"machine": str, "month": str, "product": str, "confirmed": int,
                                 "unconfirmed": int}, pk=("machine", "month", "product"),
                                if_not_exists=True)
    db["monthly_cover"].create({"machine": str, "month": str, "seconds": float, "buckets": int},
                               pk=("machine", "month"), if_not_exists=True)
    for statement in V8:
        db.execute(statement)


V8 = ["CREATE INDEX IF NOT EXISTS monthly_by_month ON monthly_counts (month)",
      "CREATE INDEX IF NOT EXISTS monthly_cover_by_month ON monthly_cover (month)",
      "INSERT INTO monthly_counts (machine, month, product, confirmed, unconfirmed)"
      " SELECT machine, substr(day, 1, 7), product, sum(confirmed), sum(unconfirmed)"
      " FROM daily_counts GROUP BY machine, substr(day, 1, 7), product",
      "INSERT INTO monthly_cover (machine, month, seconds, buckets) SELECT machine,"
      " substr(day, 1, 7), sum(seconds), sum(buckets) FROM daily_cover"
      " GROUP BY machine, substr(day, 1, 7)"]


def _v9(db: sqlite_utils.Database) -> None:
    # the board's summary of each machine (hub.rank): how urgent its latest state and stock
    # are alone, what it is doing, and the first day its packs must be used by, so that a
    # page of the board reads a few short columns, not every machine's words; and the whole
    # fleet's roll-ups by product, so that a year's report is a dozen rows, not a dozen a
    # machine (filled from the per-machine ones on upgrade)
    for column, kind in (("state_rank", int), ("look", str), ("stock_rank", int),
                         ("use_by", str)):
        if column not in db["machines"].columns_dict:
            db["machines"].add_column(column, kind)
    for grain in ("day", "month"):
        table = "daily" if grain == "day" else "monthly"
        db[f"fleet_{table}"].create({grain: str, "product": str, "confirmed": int,
                                     "unconfirmed": int}, pk=(grain, "product"),
                                    if_not_exists=True)
        db[f"fleet_{table}_cover"].create({grain: str, "seconds": float, "buckets": int},
                                          pk=grain, if_not_exists=True)
    for statement in V9:
        db.execute(statement)


V9 = ["INSERT INTO fleet_daily (day, product, confirmed, unconfirmed) SELECT day, product,"
      " sum(confirmed), sum(unconfirmed) FROM daily_counts GROUP BY day, product",
      "INSERT INTO fleet_monthly (month, product, confirmed, unconfirmed) SELECT month,"
      " product, sum(confirmed), sum(unconfirmed) FROM monthly_counts GROUP BY month, product",
      "INSERT INTO fleet_daily_cover (day, seconds, buckets) SELECT day, sum(seconds),"
      " sum(buckets) FROM daily_cover GROUP BY day",
      "INSERT INTO fleet_monthly_cover (month, seconds, buckets) SELECT month, sum(seconds),"
      " sum(buckets) FROM monthly_cover GROUP BY month"]

def _v10(db: sqlite_utils.Database) -> None:
    # each machine's software and board firmware versions, and whether its board is too old
    # for its software, for the board's "needs updating" (filled from the kept states)
    for column, kind in (("version", str), ("firmware", str), ("board_outdated", int)):
        if column not in db["machines"].columns_dict:
            db["machines"].add_column(column, kind)


def _v11(db: sqlite_utils.Database) -> None:
    # the products' names the machines' stock gives, for the pages (a short table, not every
    # machine's stock read for them), filled from the kept stocks
    db["products"].create({"id": str, "name": str}, pk="id", if_not_exists=True)
    # (names written with an escape, which may be a control character, are left to the
    # next stock: the listener checks each name it writes)
    db.execute("INSERT OR IGNORE INTO products (id, name) SELECT p.key,"
               " json_extract(p.value, '$.name') FROM machines, json_each(machines.stock,"
               " '$.products') AS p WHERE machines.stock IS NOT NULL AND json_valid(machines.stock)"
               " AND json_type(p.value, '$.name') = 'text' AND instr(p.value, '\\') = 0"
               " AND json_extract(p.value, '$.name') <> '' ORDER BY machines.id")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7,
                                                            _v8, _v9, _v10, _v11]
SCHEMA_VERSION = len(MIGRATIONS)

T = 'TEXT COLLATE "C"'  # ISO times and days compare as bytes, whatever the server's locale
PG_MIGRATIONS: list[list[str]] = [
    [
        f"CREATE TABLE machines (id {T} PRIMARY KEY, first_heard {T}, last_heard {T},"
        f" availability {T}, availability_since {T}, state TEXT, state_at {T}, stock TEXT,"
        f" stock_at {T}, last_pack {T})",
        f'CREATE TABLE buckets (id {T} PRIMARY KEY, machine {T}, start {T}, "end" {T},'
        f" clock_synced INTEGER, received {T})",
        f"CREATE TABLE bucket_counts (bucket_id {T}, product {T}, confirmed INTEGER,"
        f" unconfirmed INTEGER, PRIMARY KEY (bucket_id, product))",
        f"CREATE TABLE events (id {T} PRIMARY KEY, machine {T}, ts {T}, type {T}, slot INTEGER,"
        f" product {T}, detail TEXT, received {T})",
        f'CREATE TABLE commands (id {T} PRIMARY KEY, machine {T}, "user" {T}, sent {T},'
        f" command TEXT, answered {T}, ok INTEGER, answer TEXT,"
        f" seq BIGINT GENERATED BY DEFAULT AS IDENTITY)",
        f"CREATE TABLE users (name {T} PRIMARY KEY, role {T}, hash TEXT, created {T})",
        f'CREATE TABLE sessions (token {T} PRIMARY KEY, "user" {T}, csrf TEXT, created {T},'
        f" seen {T})",
        f"CREATE TABLE login_failures (who {T} PRIMARY KEY, failures INTEGER, last {T})",
        f"CREATE TABLE alerts (machine {T}, type {T}, subject {T}, raised {T}, cleared {T},"
        f" detail TEXT, told TEXT, PRIMARY KEY (machine, type, subject))",
        f"CREATE TABLE deliveries (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
        f" route INTEGER, channel {T}, target TEXT, body TEXT, created {T}, attempts INTEGER,"
        f" next_try {T}, done {T}, error TEXT)",
        f"CREATE TABLE daily_counts (machine {T}, day {T}, product {T}, confirmed INTEGER,"
        f" unconfirmed INTEGER, PRIMARY KEY (machine, day, product))",
        f"CREATE TABLE daily_cover (machine {T}, day {T}, seconds DOUBLE PRECISION,"
        f" buckets INTEGER, PRIMARY KEY (machine, day))",
        "CREATE INDEX buckets_by_start ON buckets (start, machine)",
        "CREATE INDEX daily_by_day ON daily_counts (day)",
        "CREATE INDEX cover_by_day ON daily_cover (day)",
        "CREATE INDEX events_by_machine ON events (machine, ts)",
        "CREATE INDEX deliveries_waiting ON deliveries (done, next_try)",
    ],
    [f"ALTER TABLE machines ADD COLUMN silence TEXT, ADD COLUMN silence_at {T}"],
    V3,
    [f"CREATE TABLE alert_log (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
     f" machine {T}, type {T}, subject {T}, detail TEXT, raised {T}, cleared {T},"
     f" acked_by TEXT, acked_at {T})", *V4],
    [f"CREATE TABLE IF NOT EXISTS enrolled (id {T} PRIMARY KEY, name TEXT, area TEXT,"
     f" place TEXT, key_file TEXT, enrolled {T})",
     f"CREATE TABLE IF NOT EXISTS asking (id {T} PRIMARY KEY, first_heard {T},"
     f" last_heard {T})", V5_KNOWN],
    [f'CREATE TABLE tallies (id {T} PRIMARY KEY, channel {T}, start {T}, "end" {T}, "user" {T},'
     " version BIGINT)",
     f"CREATE TABLE tally_counts (tally_id {T}, product {T}, count INTEGER,"
     f" PRIMARY KEY (tally_id, product))", *V6],
    [f"CREATE TABLE expired_removals (event_id {T} PRIMARY KEY, machine {T}, ts {T},"
     f" product {T}, packs INTEGER)", V7],
    # INTEGER as the daily ones (sum() of a BIGINT is a numeric, which Python reads as Decimal)
    [f"CREATE TABLE monthly_counts (machine {T}, month {T}, product {T}, confirmed INTEGER,"
     f" unconfirmed INTEGER, PRIMARY KEY (machine, month, product))",
     f"CREATE TABLE monthly_cover (machine {T}, month {T}, seconds DOUBLE PRECISION,"
     f" buckets INTEGER, PRIMARY KEY (machine, month))", *V8],
    [f"ALTER TABLE machines ADD COLUMN IF NOT EXISTS state_rank INTEGER, ADD COLUMN IF NOT"
     f" EXISTS look {T}, ADD COLUMN IF NOT EXISTS stock_rank INTEGER,"
     " ADD COLUMN IF NOT EXISTS use_by TEXT",
    # BIGINT: the whole fleet's sums, which one machine's made-up counts must not overflow
    # (its own rows' INTEGER limit stops at its own rows); read back through CAST, as sum()
    # of a BIGINT is a numeric
     f"CREATE TABLE fleet_daily (day {T}, product {T}, confirmed BIGINT, unconfirmed BIGINT,"
     " PRIMARY KEY (day, product))",
     f"CREATE TABLE fleet_monthly (month {T}, product {T}, confirmed BIGINT,"
     " unconfirmed BIGINT, PRIMARY KEY (month, product))",
     f"CREATE TABLE fleet_daily_cover (day {T} PRIMARY KEY, seconds DOUBLE PRECISION,"
     " buckets BIGINT)",
     f"CREATE TABLE fleet_monthly_cover (month {T} PRIMARY KEY, seconds DOUBLE PRECISION,"
     " buckets BIGINT)", *V9],
    [f"ALTER TABLE machines ADD COLUMN IF NOT EXISTS version {T}, ADD COLUMN IF NOT EXISTS"
     f" firmware {T}, ADD COLUMN IF NOT EXISTS board_outdated INTEGER"],
    [f"CREATE TABLE products (id {T} PRIMARY KEY, name TEXT)",
     # (a stock with an escape in it, which may be a control character the database will
     # not unescape, is left to the machine's next one: the listener checks each name)
     "INSERT INTO products (id, name) SELECT DISTINCT ON (p.key) p.key, p.value->>'name' FROM"
     " (SELECT id, stock FROM machines WHERE stock IS NOT NULL AND strpos(stock, '\\u') = 0)"
     " AS m, json_each(m.stock::json->'products') AS p WHERE json_typeof(p.value->'name') ="
     " 'string' AND p.value->>'name' <> '' ORDER BY p.key, m.id ON CONFLICT DO NOTHING",
     # room in each page for a row's next version: the machines' rows and the roll-ups are
     # updated batch after batch, and a new version on the same page needs no new index
     # entry (a HOT update; a backlog 8-12% faster). New pages only: no rewrite of the old
     *(f"ALTER TABLE {table} SET (fillfactor = 70)" for table in (
         "machines", "daily_counts", "daily_cover", "monthly_counts", "monthly_cover",
         "fleet_daily", "fleet_daily_cover", "fleet_monthly", "fleet_monthly_cover"))],
]
assert len(PG_MIGRATIONS) == SCHEMA_VERSION
CATCH_UP = "hub (catch-up)"  # who the hub's own questions for buckets are recorded as
LEADER_KEY = 0x6E737076  # "nspv": the advisory lock the hub process running the alerts holds
MACHINE_COLUMNS = ("id, first_heard, last_heard, availability, availability_since, state, stock,"
                   " silence, state_at, stock_at, silence_at, last_pack")
RANK_COLUMNS = ("id, availability, last_heard, silence, state_rank, look, stock_rank, use_by,"
                " version, firmware, board_outdated")

