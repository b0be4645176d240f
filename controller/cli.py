"""The ``nspvend`` command: the daemon, the demo, and the staff tools on the machine."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from typing import Any

import controller
from controller import logs
from controller.config import EX_CONFIG, Config, ConfigError, find_config, load_config
from controller.control import DaemonUnavailable, request
from controller.messages import MODES

log = logging.getLogger("nspvend")

EX_UNAVAILABLE = 69
EX_REFUSED = 1
COMMANDS_GROUP = "nspvend.commands"  # entry points: add_command(add) for more sub-commands


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # the daemon needs none of the commands other packages add (the demo, the hub): finding
    # them reads every installed package's metadata, some 4 MB a machine keeps for nothing
    parser = _parser(plugins=_command_of(argv) != "run")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"nspvend: config {e}", file=sys.stderr)
        return EX_CONFIG
    except DaemonUnavailable as e:
        print(f"nspvend: {e}", file=sys.stderr)
        return EX_UNAVAILABLE
    except BrokenPipeError:
        return 0


def _options(default: Any) -> argparse.ArgumentParser:
    """--config and --socket, accepted before or after the command name."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--config", default=default, help=(
        "config file (default: $NSPVEND_CONFIG, ./nspvend.toml, /etc/nspvend/config.toml)"))
    options.add_argument("--socket", default=default,
                         help="control socket of a running daemon (default: from config)")
    return options


def _command_of(argv: list[str]) -> str | None:
    """The command ``argv`` names (its first word that is not an option or an option's
    value), or None."""
    words = iter(argv)
    for word in words:
        if word in ("--config", "--socket"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _plugins() -> Any:
    from importlib.metadata import entry_points

    return entry_points(group=COMMANDS_GROUP)


def _parser(plugins: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nspvend", parents=[_options(None)], description=(
        "Controller of an out-of-hours needle-exchange vending machine."))
    p.add_argument("--version", action="version", version=f"nspvend {controller.__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    def add(name: str, func: Any, help: str, json_flag: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help,
                            parents=[_options(argparse.SUPPRESS)])
        sp.set_defaults(func=func)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="print JSON for programs")
        return sp

    add("run", _run, "run the daemon (systemd starts this)")
    for plugin in _plugins() if plugins else ():  # the demo (simulator/), the hub (hub/)
        try:
            plugin.load()(add)
        except ImportError as e:  # a part not installed here (the hub on a Pi)
            add(plugin.name, lambda args, name=plugin.name, why=str(e): _missing(name, why),
                f"not installed here ({e})")
    add("status", _status, "mode, faults and stock", json_flag=True)
    add("stock", _stock, "what each slot holds", json_flag=True)
    refill = add("refill", _refill, "tell the machine how many packs a slot now holds",
                 json_flag=True)
    refill.add_argument("slot", nargs="?", type=int, help="slot number")
    refill.add_argument("count", nargs="?", type=int, help="packs now in the slot")
    refill.add_argument("--all", action="store_true", help="every slot is full to capacity")
    refill.add_argument("--expires", metavar="YYYY-MM",
                        help="the month the packs put in expire at the end of (without it, "
                             "the slot keeps no date)")
    refill.add_argument("--expired", type=int, metavar="N",
                        help="packs past their date taken out of the slot (for the reports)")
    slot = add("slot", _slot, "enable, disable, clear a fault or configure a slot", json_flag=True)
    slot.add_argument("action", choices=("enable", "disable", "clear", "configure"))
    slot.add_argument("slot", type=int)
    slot.add_argument("--product")
    slot.add_argument("--capacity", type=int)
    slot.add_argument("--low-at", type=int)
    mode = add("mode", _mode, "put the machine in or out of service", json_flag=True)
    mode.add_argument("mode", choices=MODES)
    usage = add("usage", _usage, "packs given out, per product and time bucket", json_flag=True)
    usage.add_argument("--csv", action="store_true", help="CSV for a spreadsheet")
    usage.add_argument("--since", help="from this date or time (e.g. 2026-11-01)")
    usage.add_argument("--until", help="before this date or time")
    events = add("events", _events, "the machine's recent events", json_flag=True)
    events.add_argument("--limit", type=int, default=20)
    watch = add("watch", _watch, "print live stock, events and usage of every machine under "
                                 "a prefix (connects to the hub as in the config's [mqtt])")
    watch.add_argument("--host", help="the hub's MQTT broker (default: from config)")
    watch.add_argument("--port", type=int, help="its port (default: from config, or 1883)")
    watch.add_argument("--prefix", help="topic prefix (default: from config, or nspvend)")
    watch.add_argument("--username", help="log in as (default: from config)")
    watch.add_argument("--password-file", help="file holding the password")
    watch.add_argument("--ca-file", help="CA certificate: turns TLS on")
    watch.add_argument("--json", action="store_true", help="one JSON object per message")
    screens = add("screens", _screens, "every screen a client can meet, as the display shows it")
    screens.add_argument("--display", choices=("hd44780", "board", "st7789", "ili9341", "file"),
                         help="as this display shows it (default: the config's)")
    screens.add_argument("--lang", help="in this language (default: the config's first)")
    screens.add_argument("--png", help="draw graphic screens as PNG pictures in this folder")
    screens.add_argument("--languages", action="store_true", help="list the languages shipped")
    check = add("check-config", _check_config, "check a config file and exit 0, or 78 with "
                                               "the problem")
    check.add_argument("file")
    board = add("board", _board_update, "write this package's firmware to the dispenser board "
                                        "(vending paused meanwhile)")
    board.add_argument("action", choices=("update",))
    board.add_argument("--port", help="the board's serial port (default: the config's "
                                      "[serial] port)")
    return p


def _board_update(args: argparse.Namespace) -> int:
    """``nspvend board update``: a running daemon pauses vending and lets go of the port;
    mpremote writes the firmware, each file checked on the board; the board is reset, and
    the daemon opens the port again and waits for its hello (hal/boardupdate.py). However
    it ends, the daemon is asked to serve again; it would by itself after ten minutes."""
    from hal.boardupdate import UpdateError, firmware_version, write_firmware

    port = args.port
    socket = _socket_path(args)
    daemon = os.path.exists(socket)  # one that does not answer is not written around
    if daemon:
        released, code = _ask(args, {"id": _command_id(), "cmd": "board", "action": "release"})
        if code:
            return code
        port = port or released["result"]["port"]
    if port is None:
        config: Config = load_config(find_config(args.config))
        if config.hal != "serial":
            print(f"nspvend: board update: hal is {config.hal!r}: this machine has no "
                  "dispenser board of its own", file=sys.stderr)
            return EX_REFUSED
        port = config.serial.port
    print(f"nspvend: writing firmware {firmware_version()} to the board on {port}"
          + (" (vending paused: the screen says it is being restocked)" if daemon else ""))
    failed = None
    try:
        write_firmware(port, say=lambda line: print(f"  {line}"))
    except UpdateError as e:
        failed = e
    finally:
        if daemon:  # whatever happened (Ctrl-C too), the machine serves again
            resumed, code = _ask(args, {"id": _command_id(), "cmd": "board",
                                        "action": "resume"})
    if daemon:
        if code:
            return code
        online, firmware = resumed["result"]["online"], resumed["result"]["firmware"]
        if not online:  # the daemon waited a little; the board may take longer to boot
            online, firmware = _hello_by_status(args)
    else:
        online, firmware = _hello_of(port)
    if failed is not None:
        print(f"nspvend: board update: {failed}", file=sys.stderr)
        return EX_REFUSED
    if not online:
        print(f"nspvend: the firmware is written but the board has not answered on {port} "
              "yet; nspvend status says when it does", file=sys.stderr)
        return EX_REFUSED
    print(f"nspvend: the board answers with firmware {firmware}"
          + ("; vending again" if daemon else ""))
    return 0


def _hello_by_status(args: argparse.Namespace, wait: float = 20.0) -> tuple[bool, str | None]:
    """The daemon's word on the board, asked until it has heard its hello or ``wait``."""
    import time

    deadline = time.monotonic() + wait
    while True:
        answer, code = _ask(args, {"id": _command_id(), "cmd": "status"})
        state = answer.get("result", {}).get("state", {}) if not code else {}
        firmware = state.get("board_firmware")
        if firmware and not {"board_offline", "board_outdated"} & set(state.get("faults", ())):
            return True, firmware
        if time.monotonic() >= deadline:
            return False, None
        time.sleep(0.5)


def _command_id() -> str:
    return "board-" + os.urandom(6).hex()


def _hello_of(port: str, wait: float = 20.0) -> tuple[bool, str | None]:
    """With no daemon: open the port ourselves and wait for the board's hello."""
    from hal.serial import BoardConnection

    link = BoardConnection(port)
    try:
        link.open(wait=wait)
        return link.online, link.firmware
    finally:
        link.close()


def _missing(name: str, why: str) -> int:
    print(f"nspvend {name}: not installed here ({why}); on the hub's server: "
          "pip install 'nspvend[hub]'", file=sys.stderr)
    return EX_UNAVAILABLE


# -- the daemon ---------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from controller.daemon import Daemon, install_signal_handlers

    os.umask(0o077)  # the database and its WAL are for this service alone (as UMask= in the unit)
    logs.setup()
    config = load_config(find_config(args.config))
    daemon = Daemon(config)
    install_signal_handlers(daemon)
    return daemon.run()


def _screens(args: argparse.Namespace) -> int:
    from pathlib import Path

    from controller import showcase
    from controller.i18n import languages

    if args.languages:
        print("\n".join(showcase.language_lines()))
        return 0
    path = find_config(args.config)
    config = load_config(path) if args.config or Path(path).exists() else showcase.demo_config()
    if args.lang and args.lang not in languages():
        print(f"nspvend screens: no language {args.lang!r}; there are "
              f"{', '.join(languages())}", file=sys.stderr)
        return 2
    if args.lang and args.display in ("hd44780", "board") and not languages()[args.lang].latin:
        print(f"nspvend screens: {languages()[args.lang].name} needs a graphic screen (a "
              "character LCD has only Latin letters)", file=sys.stderr)
        return 2
    print("\n".join(showcase.show(config, args.display, args.lang,
                                  Path(args.png) if args.png else None)))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    logs.setup("WARNING")  # a retired key: one warning line, and still ok
    config = load_config(args.file)
    print(f"{args.file}: ok ({config.machine_id}, hal {config.hal}, {len(config.products)} "
          f"products, {len(config.slots)} slots, mqtt {'on' if config.mqtt else 'off'})")
    return 0


def _watch(args: argparse.Namespace) -> int:
    from controller.watch import HubAccount, Watcher

    logs.setup("WARNING")
    mqtt_config = None
    if not args.host:
        config = load_config(find_config(args.config))
        if config.mqtt is None:
            raise ConfigError(config.path, "mqtt", "no [mqtt] table; pass --host")
        mqtt_config = config.mqtt
    password_file = args.password_file or (mqtt_config.password_file if mqtt_config else None)
    password = None
    if password_file:
        try:
            with open(password_file) as f:
                password = f.read().strip()
        except OSError as e:
            print(f"nspvend: cannot read the password file {password_file}: {e.strerror}",
                  file=sys.stderr)
            return EX_CONFIG
    account = HubAccount(
        host=args.host or mqtt_config.host,
        port=args.port or (mqtt_config.port if mqtt_config else 1883),
        prefix=args.prefix or (mqtt_config.prefix if mqtt_config else "nspvend"),
        username=args.username or (mqtt_config.username if mqtt_config else None),
        password=password,
        ca_file=args.ca_file or (mqtt_config.ca_file if mqtt_config else None),
        cert_file=mqtt_config.cert_file if mqtt_config and not args.ca_file else None,
        key_file=mqtt_config.key_file if mqtt_config and not args.ca_file else None,
    )
    try:
        Watcher(account, as_json=args.json).run()
    except OSError as e:
        print(f"nspvend: cannot reach the hub at {account.host}:{account.port}: "
              f"{e.strerror or e}", file=sys.stderr)
        return EX_UNAVAILABLE
    except KeyboardInterrupt:
        pass
    return 0


# -- staff tools over the control socket ----------------------------------------
def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    config: Config = load_config(find_config(args.config))
    return config.control_socket


def _ask(args: argparse.Namespace, command: dict) -> tuple[dict, int]:
    answer = request(_socket_path(args), command)
    if not answer.get("ok"):
        print(f"nspvend: refused: {answer.get('error')}", file=sys.stderr)
        return answer, EX_REFUSED
    return answer, 0


def _reply(args: argparse.Namespace, command: dict, show: Any) -> int:
    answer, code = _ask(args, command)
    if code:
        return code
    if getattr(args, "json", False):
        print(json.dumps(answer["result"], indent=2))
    else:
        show(answer["result"])
    return 0


def _print_stock(stock: dict) -> None:
    print(f"{'slot':>4}  {'product':<14} {'count':>9}  {'use by':<7}  status")
    for s in stock["slots"]:
        print(f"{s['slot']:>4}  {s['product']:<14} {s['count']:>4}/{s['capacity']:<4}  "
              f"{s.get('expires') or '-':<7}  "
              f"{s['status']}{'  (low at ' + str(s['low_at']) + ')' if s['status'] == 'low' else ''}")
    print()
    for product, p in stock["products"].items():
        print(f"  {product:<14} {p['count']:>4}  {p['status']}")


def _status(args: argparse.Namespace) -> int:
    def show(r: dict) -> None:
        st = r["state"]
        print(f"mode: {st['mode']}   door: {st['door']}   sharps bin: {st['sharps_bin']}   "
              f"temperature: {st['temperature_c']} C")
        print(f"faults: {', '.join(st['faults']) or 'none'}")
        if "board_outdated" in st["faults"]:
            print("  the dispenser board's firmware is older than this software: the machine "
                  "serves nobody until it is updated: sudo nspvend board update")
        board = f"   board firmware {st['board_firmware']}" if st.get("board_firmware") else ""
        print(f"clock synced: {'yes' if st['clock_synced'] else 'no'}   up: {st['uptime_s']} s"
              f"   version {st['version']}{board}   messages waiting for the hub: "
              f"{r['outbox']}")
        if r["open_vends"]:
            print(f"vends waiting for the board to confirm: {r['open_vends']}")
        print()
        _print_stock(r["stock"])

    return _reply(args, {"cmd": "status"}, show)


def _stock(args: argparse.Namespace) -> int:
    return _reply(args, {"cmd": "stock"}, _print_stock)


def _print_slots(r: dict) -> None:
    for s in r.get("slots", [r]):
        dated = f", use by end of {s['expires']}" if s.get("expires") else ""
        taken = f"; {s['expired']} past their date taken out" if s.get("expired") else ""
        print(f"slot {s['slot']}: {s['product']} {s['count']}/{s['capacity']} (low at "
              f"{s['low_at']}{dated}){taken}")


def _refill(args: argparse.Namespace) -> int:
    if args.all:
        if args.slot is not None:
            print("nspvend: refill: give either --all or SLOT COUNT, not both", file=sys.stderr)
            return 2
        command: dict = {"cmd": "refill", "all": True}
    elif args.slot is None or args.count is None:
        print("nspvend: refill: give SLOT COUNT (the packs now in the slot) or --all",
              file=sys.stderr)
        return 2
    else:
        command = {"cmd": "refill", "slot": args.slot, "count": args.count}
    if args.expires is not None:
        command["expiry"] = args.expires
    if args.expired is not None:
        command["expired"] = args.expired
    return _reply(args, command, _print_slots)


def _slot(args: argparse.Namespace) -> int:
    names = {"enable": "enable", "disable": "disable", "clear": "clear_fault",
             "configure": "configure_slot"}
    command: dict = {"cmd": names[args.action], "slot": args.slot}
    if args.action == "configure":
        for key, value in (("product", args.product), ("capacity", args.capacity),
                           ("low_at", args.low_at)):
            if value is not None:
                command[key] = value
    return _reply(args, command, _print_slots)


def _mode(args: argparse.Namespace) -> int:
    return _reply(args, {"cmd": "set_mode", "mode": args.mode},
                  lambda r: print(f"mode: {r['mode']}"))


def _usage(args: argparse.Namespace) -> int:
    command: dict = {"cmd": "usage"}
    for key in ("since", "until"):
        if getattr(args, key):
            command[key] = getattr(args, key)
    answer, code = _ask(args, command)
    if code:
        return code
    result = answer["result"]
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.csv:
        out = csv.writer(sys.stdout)
        out.writerow(["start", "end", "product", "confirmed", "unconfirmed", "clock_synced"])
        for b in result["buckets"]:
            for product in sorted(b["counts"]):
                out.writerow([b["start"], b["end"] or "", product, b["counts"][product],
                              b["unconfirmed"].get(product, 0), str(b["clock_synced"]).lower()])
    else:
        print(f"{'product':<14} {'packs':>7} {'unconfirmed':>12}")
        for product, t in sorted(result["totals"].items()):
            print(f"{product:<14} {t['confirmed']:>7} {t['unconfirmed']:>12}")
        print(f"\n{len(result['buckets'])} time buckets; --csv for each of them")
    return 0


def _events(args: argparse.Namespace) -> int:
    def show(r: dict) -> None:
        for e in reversed(r["events"]):
            where = f" slot {e['slot']}" if "slot" in e else ""
            what = f" {e['product']}" if "product" in e else ""
            detail = f": {e['detail']}" if "detail" in e else ""
            print(f"{e['ts']}  {e['type']}{where}{what}{detail}")

    return _reply(args, {"cmd": "events", "limit": args.limit}, show)


if __name__ == "__main__":
    sys.exit(main())
