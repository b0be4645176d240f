"""``nspvend hub run|retire|backup|user add|user remove|user list``: the hub's commands (an
entry point of ``nspvend.commands``, so the machine's CLI needs none of the hub's packages)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller import logs
from controller.config import ConfigError
from hub.config import HubConfig, find_hub_config, load_hub_config, safe_url

if TYPE_CHECKING:
    from hub.store import HubStore

EX_USAGE = 64
MIN_PASSWORD = 10


def add_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    hub = add("hub", _help, "the hub service: run it, and manage who may log in")
    sub = hub.add_subparsers(metavar="WHAT")
    run = sub.add_parser("run", help="run the hub (systemd starts this)")
    run.add_argument("--instance", type=int, metavar="N", help=(
        "one of several hub processes on one store: its own MQTT session (client id "
        "mqtt.client_id-N), the web port shared with the others"))
    run.set_defaults(func=_run)
    retire = sub.add_parser("retire", help=(
        "take hub process N away for good (stop it first): store what waits for it at the "
        "broker and end its MQTT session, so the broker keeps no share for it"))
    retire.add_argument("--instance", type=int, metavar="N", help=(
        "the process to retire; without it, the session of the hub as it ran alone "
        "(mqtt.client_id), once several processes share the messages instead"))
    retire.set_defaults(func=_retire)
    backup = sub.add_parser("backup", help="copy the hub's SQLite store to FILE while it runs "
                                           "(PostgreSQL: pg_dump)")
    backup.add_argument("file", metavar="FILE")
    backup.set_defaults(func=_backup)
    user = sub.add_parser("user", help="add, remove or list the people who may log in")
    users = user.add_subparsers(metavar="ACTION")
    adding = users.add_parser("add", help="add a user, or change one's role and password "
                                          "(the password is the first line of stdin)")
    adding.add_argument("name")
    adding.add_argument("--role", choices=("staff", "viewer"), required=True)
    adding.set_defaults(func=_user_add)
    removing = users.add_parser("remove", help="remove a user (their sessions end)")
    removing.add_argument("name")
    removing.set_defaults(func=_user_remove)
    listing = users.add_parser("list", help="who may log in")
    listing.set_defaults(func=_user_list)
    machine = sub.add_parser("machine", help="enrol a machine, list them, or remove one")
    machines = machine.add_subparsers(metavar="ACTION")
    enrolling = machines.add_parser("add", help=(
        "enrol a machine: write its broker password and command key, and print what to give "
        "it and the broker"))
    enrolling.add_argument("id", metavar="ID")
    enrolling.add_argument("--name", required=True, help="what staff call it")
    enrolling.add_argument("--area", help="the area it serves (the fleet board's filter)")
    enrolling.add_argument("--place", help="where it is")
    enrolling.add_argument("--site", help="the site broker account that forwards its "
                                          "messages, if any: prints that account's ACL lines")
    enrolling.add_argument("--out", metavar="DIR", help=(
        "where its password and key go (default: machines/ beside the hub's config)"))
    enrolling.set_defaults(func=_machine_add)
    unenrolling = machines.add_parser("remove", help="the hub no longer takes its messages "
                                                     "(its history stays in the reports)")
    unenrolling.add_argument("id", metavar="ID")
    unenrolling.set_defaults(func=_machine_remove)
    known = machines.add_parser("list", help="the machines the hub knows, and the ids asking "
                                             "to join")
    known.set_defaults(func=_machine_list)
    for parser in (run, retire, backup, adding, removing, listing, enrolling, unenrolling,
                   known):
        parser.add_argument("--config", dest="hub_config", help=(
            "hub config file (default: $NSPVEND_HUB_CONFIG, ./hub.toml, /etc/nspvend/hub.toml)"))


def _help(args: argparse.Namespace) -> int:
    print("nspvend hub run [--instance N] | retire [--instance N] | backup FILE | "
          "user add NAME --role staff|viewer | user remove NAME | user list | "
          "machine add ID --name NAME [--area AREA] | machine remove ID | machine list",
          file=sys.stderr)
    return EX_USAGE


def _config(args: argparse.Namespace) -> HubConfig:
    return load_hub_config(find_hub_config(getattr(args, "hub_config", None)
                                           or getattr(args, "config", None)))


def _needing_packages(module: str) -> Any:
    """``module`` of the hub imported, or exit 69 with one line if the hub's packages (the
    ``hub`` extra) are missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        print(f"nspvend hub: the hub's packages are not installed ({e}): "
              "pip install 'nspvend[hub]'", file=sys.stderr)
        raise SystemExit(69) from None


def _run(args: argparse.Namespace) -> int:
    HubService = _needing_packages("hub.service").HubService  # noqa: N806

    os.umask(0o077)  # the database and its sessions are for the service alone
    logs.setup()
    config = _config(args)
    if args.instance is not None:
        config = _instance(config, args.instance, "run")
    wait = 5
    while True:  # a database server not up yet (at boot, or restarting): wait for it here,
        try:     # rather than exit and have systemd give up after ten tries
            _store_of(config).close()
            break
        except SystemExit as e:
            if e.code != 69:
                raise
        print(f"nspvend hub: trying again in {wait} s", file=sys.stderr)
        time.sleep(wait)
        wait = min(wait * 2, 60)
    return HubService(config, shared_port=args.instance is not None).run()


def _instance(config: HubConfig, n: int, command: str) -> HubConfig:
    """``config`` for hub process ``n`` of several: its own MQTT session."""
    if not 1 <= n <= 99:
        print(f"nspvend hub {command}: --instance is a number from 1 to 99", file=sys.stderr)
        raise SystemExit(EX_USAGE)
    return dataclasses.replace(config, client_id=f"{config.client_id}-{n}")


def _retire(args: argparse.Namespace) -> int:
    listening = _needing_packages("hub.listener")
    Listener, Retiring = listening.Listener, listening.Retiring  # noqa: N806

    logs.setup()
    config = _config(args)
    if not config.share_group:
        print("nspvend hub retire: only hub processes sharing the machines' messages "
              "(mqtt.share_group) are retired; this hub has none", file=sys.stderr)
        return EX_USAGE
    who = "the hub as it ran alone"
    if args.instance is not None:
        config = _instance(config, args.instance, "retire")
        who = f"hub process {args.instance}"
    store = _store_of(config)
    listener = Listener(config, store, client_id=config.client_id, retiring=True)
    try:
        waiting = listener.retire()
    except Retiring as e:
        print(f"nspvend hub retire: {who}: {e}", file=sys.stderr)
        return 75  # EX_TEMPFAIL
    finally:
        store.close()
    if not listener.session_present:
        print(f"{who} had no session at the broker ({config.client_id}): nothing waited for it")
    else:
        print(f"retired {who}: took the {waiting} messages that waited for it (its usage and "
              "events stored); the broker keeps nothing for it now")
    return 0


def _store_of(config: HubConfig) -> HubStore:
    """The store ``config`` names, or one line saying why it cannot be opened: exit 78 for a
    file that cannot be, 69 for a database server that does not answer (yet)."""
    from hub.store import StoreError, open_store

    try:
        return open_store(config)
    except (OSError, sqlite3.Error, StoreError) as e:
        key, where = (("database.url", "the database") if config.database_url
                      else ("database.path", config.database_path))
        raise ConfigError(config.path, key, f"cannot open {where}: {e}") from None
    except Exception as e:  # psycopg's errors: the server is down, or refuses us
        if type(e).__module__.startswith("psycopg"):
            print(f"nspvend hub: cannot reach the database at {safe_url(config.database_url)}: "
                  f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
                  file=sys.stderr)
            raise SystemExit(69) from None
        raise


def _store(args: argparse.Namespace) -> HubStore:
    return _store_of(_config(args))


def _backup(args: argparse.Namespace) -> int:
    from hub.store import StoreError

    os.umask(0o077)  # the copy holds the users' password hashes and their sessions
    store = _store(args)
    try:
        if os.path.exists(args.file):
            print(f"nspvend hub backup: {args.file} is already there; name a new file",
                  file=sys.stderr)
            return EX_USAGE
        store.backup(args.file)
    except StoreError as e:
        print(f"nspvend hub backup: {e}", file=sys.stderr)
        return EX_USAGE
    except (OSError, sqlite3.Error) as e:
        print(f"nspvend hub backup: cannot write {args.file}: {e}", file=sys.stderr)
        return 73  # EX_CANTCREAT
    finally:
        store.close()
    print(f"backed up the hub's store to {args.file}")
    return 0


def _user_add(args: argparse.Namespace) -> int:
    try:
        from hub.web import hash_password
    except ImportError as e:
        print(f"nspvend hub: the hub's packages are not installed ({e}): "
              "pip install 'nspvend[hub]'", file=sys.stderr)
        return 69

    password = sys.stdin.readline().rstrip("\n")
    if len(password) < MIN_PASSWORD:
        print(f"nspvend hub: the password (first line of stdin) must have at least "
              f"{MIN_PASSWORD} characters", file=sys.stderr)
        return EX_USAGE
    if not args.name.strip() or len(args.name) > 64 or any(c.isspace() for c in args.name):
        print("nspvend hub: a user name is 1 to 64 characters without spaces", file=sys.stderr)
        return EX_USAGE
    store = _store(args)
    try:
        existed = store.people.user(args.name) is not None
        store.people.set_user(args.name, args.role, hash_password(password), datetime.now(UTC))
    finally:
        store.close()
    print(f"{'changed' if existed else 'added'} {args.name} ({args.role})")
    return 0


def _user_remove(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        removed = store.people.remove_user(args.name)
    finally:
        store.close()
    if not removed:
        print(f"nspvend hub: there is no user {args.name}", file=sys.stderr)
        return 1
    print(f"removed {args.name}")
    return 0


def _user_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        for name, role, created in store.people.users():
            print(f"{name:<24} {role:<7} since {created}")
    finally:
        store.close()
    return 0


def _machine_add(args: argparse.Namespace) -> int:
    from controller.config import MACHINE_ID
    from hub.enrol import enrol, instructions

    if not MACHINE_ID.fullmatch(args.id):
        print(f"nspvend hub machine add: {args.id[:64]!r} is not a machine id like hackney-01",
              file=sys.stderr)
        return EX_USAGE
    for what, value in (("--name", args.name), ("--area", args.area), ("--place", args.place),
                        ("--site", args.site)):
        if value is not None and (not value.strip() or len(value) > 200
                                  or not value.isprintable()):
            print(f"nspvend hub machine add: {what} must be 1 to 200 printable characters",
                  file=sys.stderr)
            return EX_USAGE
    config = _config(args)
    if args.id in config.machines:
        print(f"nspvend hub machine add: {args.id} is in {config.path} already ([[machines]])",
              file=sys.stderr)
        return EX_USAGE
    out = Path(args.out) if args.out else Path(config.path).resolve().parent / "machines"
    store = _store_of(config)
    try:
        try:
            done = enrol(config, store, args.id, args.name, args.area, args.place, out,
                         datetime.now(UTC))
        except OSError as e:
            print(f"nspvend hub machine add: cannot write into {out}: {e.strerror or e}",
                  file=sys.stderr)
            return 73
    finally:
        store.close()
    sys.stdout.write(instructions(config, done, args.site))
    print(f"enrolled {args.id} ({args.name}): the hub takes its messages from now on",
          file=sys.stderr)
    return 0


def _machine_remove(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.id in config.machines:
        print(f"nspvend hub machine remove: {args.id} is listed in {config.path}; remove its "
              "[[machines]] entry there", file=sys.stderr)
        return EX_USAGE
    store = _store_of(config)
    try:
        removed = store.fleet.unenrol(args.id)
    finally:
        store.close()
    if not removed:
        print(f"nspvend hub machine remove: no machine {args.id[:64]} is enrolled",
              file=sys.stderr)
        return 1
    print(f"removed {args.id}: its messages are no longer taken; its history stays")
    return 0


def _machine_list(args: argparse.Namespace) -> int:
    config = _config(args)
    store = _store_of(config)
    try:
        enrolled = store.fleet.enrolled()
        asking = store.fleet.asking()
    finally:
        store.close()
    for mid, info in sorted(config.machines.items()):
        print(f"{mid:<24} {info.name:<32} {info.area or '-':<16} in {Path(config.path).name}")
    for mid, name, area, _, _, since in enrolled:
        if mid not in config.machines:
            print(f"{mid:<24} {name:<32} {area or '-':<16} enrolled {since}")
    for mid, first, last in asking:
        print(f"{mid:<24} asking to join: first heard {first}, last {last}")
    return 0
