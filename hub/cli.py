"""``nspvend hub run|user add|user remove|user list``: the hub's commands (an entry point of
``nspvend.commands``, so the machine's CLI needs none of the hub's packages)."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from controller import logs
from controller.config import ConfigError
from hub.config import HubConfig, find_hub_config, load_hub_config

if TYPE_CHECKING:
    from hub.store import HubStore

EX_USAGE = 64
MIN_PASSWORD = 10


def add_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    hub = add("hub", _help, "the hub service: run it, and manage who may log in")
    sub = hub.add_subparsers(metavar="WHAT")
    run = sub.add_parser("run", help="run the hub (systemd starts this)")
    run.set_defaults(func=_run)
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
    for parser in (run, adding, removing, listing):
        parser.add_argument("--config", dest="hub_config", help=(
            "hub config file (default: $NSPVEND_HUB_CONFIG, ./hub.toml, /etc/nspvend/hub.toml)"))


def _help(args: argparse.Namespace) -> int:
    print("nspvend hub run | user add NAME --role staff|viewer | user remove NAME | user list",
          file=sys.stderr)
    return EX_USAGE


def _config(args: argparse.Namespace) -> HubConfig:
    return load_hub_config(find_hub_config(getattr(args, "hub_config", None)
                                           or getattr(args, "config", None)))


def _run(args: argparse.Namespace) -> int:
    try:
        from hub.service import HubService
    except ImportError as e:
        print(f"nspvend hub: the hub's packages are not installed ({e}): "
              "pip install 'nspvend[hub]'", file=sys.stderr)
        return 69

    os.umask(0o077)  # the database and its sessions are for the service alone
    logs.setup()
    config = _config(args)
    _check_database(config)
    return HubService(config).run()


def _check_database(config: HubConfig) -> None:
    from hub.store import HubStore

    try:
        HubStore(config.database_path).close()
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(config.path, "database.path",
                          f"cannot open {config.database_path}: {e}") from None


def _store(args: argparse.Namespace) -> HubStore:
    from hub.store import HubStore

    config = _config(args)
    _check_database(config)
    return HubStore(config.database_path)


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
        existed = store.user(args.name) is not None
        store.set_user(args.name, args.role, hash_password(password), datetime.now(UTC))
    finally:
        store.close()
    print(f"{'changed' if existed else 'added'} {args.name} ({args.role})")
    return 0


def _user_remove(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        removed = store.remove_user(args.name)
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
        for name, role, created in store.users():
            print(f"{name:<24} {role:<7} since {created}")
    finally:
        store.close()
    return 0
