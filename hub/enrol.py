"""The machines the hub knows: those in hub.toml's ``[[machines]]`` and those staff enrolled
(``nspvend hub machine add``). Only their messages are stored; any other id under the
prefix is kept among at most 100 "asking to join" (first and last heard), so a typo shows on
the fleet board and a flood of made-up ids grows nothing.

Enrolling writes the machine's broker password and command key into files only their owner
reads, records the machine in the store (every hub process sees it within seconds) and
prints what to give the machine (its ``[mqtt]`` table) and the broker (the password line and
the ACL lines).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shlex
import threading
import time
from datetime import datetime
from pathlib import Path

from hub.config import HubConfig, MachineInfo
from hub.store import HubStore

REFRESH_S = 2.0  # how soon every hub process knows a machine enrolled or removed


class Directory:
    """Keeps ``config.machines`` as hub.toml's machines and the store's enrolled ones (the
    file's entry wins), swapped whole so readers in other threads see one or the other."""

    def __init__(self, config: HubConfig, store: HubStore) -> None:
        self.config, self.store = config, store
        self.from_file = dict(config.machines)
        self._lock = threading.Lock()
        self._at = 0.0

    def refresh(self, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._at < REFRESH_S:
                return
            self._at = time.monotonic()
            known: dict[str, MachineInfo] = {}
            for mid, name, area, place, key_file, _ in self.store.fleet.enrolled():
                known[mid] = MachineInfo(id=mid, name=name, place=place,
                                         command_key_file=key_file, area=area)
            known.update(self.from_file)
            if known != self.config.machines:
                object.__setattr__(self.config, "machines", known)


@dataclasses.dataclass
class Enrolled:
    machine: str
    password_file: Path
    key_file: Path


def enrol(config: HubConfig, store: HubStore, machine: str, name: str, area: str | None,
          place: str | None, out: Path, at: datetime) -> Enrolled:
    """Enrol ``machine``: its password and key (new ones, or those already in ``out``) in
    ``out`` (mode 0600), and the store's record of it."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    password_file = out / f"{machine}.password"
    key_file = out / f"{machine}.key"
    for path, secret in ((password_file, secrets.token_urlsafe(24)),
                         (key_file, secrets.token_urlsafe(32))):
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret + "\n")
    store.fleet.enrol(machine, name, area, place, str(key_file.resolve()), at)
    return Enrolled(machine, password_file.resolve(), key_file.resolve())


def instructions(config: HubConfig, done: Enrolled, site: str | None = None) -> str:
    """What to give the machine and the broker, as text to copy."""
    mqtt = config.mqtt
    m = done.machine
    lines = [
        f"# {m}: copy {done.password_file} to the machine as /etc/nspvend/mqtt.password and",
        f"# {done.key_file} as /etc/nspvend/command.key (both mode 0600), and put this",
        "# in its /etc/nspvend/nspvend.toml:",
        "[mqtt]",
        f'host = "{mqtt.host}"',
        f"port = {mqtt.port}",
        f'prefix = "{mqtt.prefix}"',
        f'username = "{m}"',
        'password_file = "/etc/nspvend/mqtt.password"',
        'command_key_file = "/etc/nspvend/command.key"',
        *(['ca_file = "/etc/nspvend/ca.crt"'] if mqtt.ca_file else []),
        "",
        "# On the broker: its password (then reload mosquitto)",
        f"mosquitto_passwd -b /etc/mosquitto/nspvend.passwd {m} "
        f'"$(cat {shlex.quote(str(done.password_file))})"',
        f"# The hub reads {shlex.quote(str(done.key_file))} to sign its commands: if you are not",
        "# the hub's user, give it the file: chown nspvend-hub: KEYFILE (keep mode 0600)",
        "# and in its ACL file, if it does not already have the pattern lines for every",
        "# machine (examples/mosquitto/nspvend.acl has them):",
        *acl_lines(mqtt.prefix, m),
    ]
    if site:
        lines += ["", f"# The site account {site} forwards this machine's messages: under",
                  f"# 'user {site}' in the ACL file add", *site_lines(mqtt.prefix, m)]
    return "\n".join(lines) + "\n"


def acl_lines(prefix: str, machine: str) -> list[str]:
    leaves = ("availability", "state", "stock", "usage", "event", "cmd/result")
    return ([f"user {machine}"] + [f"topic write {prefix}/{machine}/{leaf}" for leaf in leaves]
            + [f"topic read {prefix}/{machine}/cmd",
               f"topic write homeassistant/+/{machine}/#"])


def site_lines(prefix: str, machine: str) -> list[str]:
    """What a site account may do for one machine behind it: speak for it, take its
    commands down; nothing for any other machine."""
    leaves = ("availability", "state", "stock", "usage", "event", "cmd/result")
    return ([f"topic write {prefix}/{machine}/{leaf}" for leaf in leaves]
            + [f"topic read {prefix}/{machine}/cmd"])
