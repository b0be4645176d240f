"""The hub's pages and endpoints (Starlette, Jinja2, served by uvicorn): docs/hub.md's table.

Every page and endpoint needs a login. Sessions live in the store (a random token in an
HttpOnly, SameSite=Strict cookie); every form carries the session's CSRF token; a JSON
POST needs none (the JSON content type and SameSite already stop cross-site posts). A
``viewer`` reads and downloads; only ``staff`` command. Failed logins slow the next
attempt for that name and that address. Every command is recorded with who sent it, what,
when, and the machine's answer.
"""

from __future__ import annotations

import asyncio
import csv
import hmac
import io
import json
import logging
import math
import secrets
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from controller.clock import Clock, SystemClock, iso, parse_iso
from controller.commands import COMMANDS
from controller.config import MACHINE_ID
from controller.messages import MODES, CommandResult, compact
from hub import alerts, board, humane, reports, tally
from hub.config import HubConfig
from hub.listener import Heard, Listener
from hub.store import HubStore

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
COOKIE = "nspvend_session"
LOGIN_COOKIE = "nspvend_login"
SESSION_HOURS = 12
ANSWER_TIMEOUT_S = 30.0
FREE_FAILURES = 3  # for a name; then 4, 8, 16 ... s before the next attempt may be made
FREE_FAILURES_PER_ADDRESS = 10
CHECKERS = 2  # argon2 checks at once, off the event loop
CHECKS_WAITING = 16  # more than this waiting: "busy" at once, not a queue without end
MAX_WAIT_S = 300
ROLES = ("staff", "viewer")
HASHER = PasswordHasher()
_DUMMY_HASH = HASHER.hash("a password nobody has")
COMMAND_NAMES = set(COMMANDS)
MAX_BODY = 64 * 1024  # bytes a request may carry (a form or a command is a few hundred)
BODY_TIMEOUT_S = 10.0  # for the whole body to arrive, once the head has
# on every response: no inline script or style, no framing, no referrer, no sniffing
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; "
                                 b"img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                                 b"form-action 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
NOTICE_COOKIE = "nspvend_notice"  # what a command came to: shown once, on the next page
ALERT_DAYS = 30


def hash_password(password: str) -> str:
    return HASHER.hash(password)


class Guard:
    """ASGI middleware in front of every page and endpoint: a body over :data:`MAX_BODY` is
    answered 413 before it is read (by its Content-Length, or as it streams in: at most
    that much is ever held), and every response carries :data:`SECURITY_HEADERS`, pages
    and JSON ``Cache-Control: no-store`` too."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", [])
                           if h[0].lower() != b"cache-control"
                           or scope["path"].startswith("/static/")]
                headers += SECURITY_HEADERS
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await _too_large(guarded)
            return
        body = bytearray()
        more = True
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):  # a body dripped in is not waited for
                while more:  # at most MAX_BODY + one chunk is ever held
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > MAX_BODY:
                        await _too_large(guarded)
                        return
        except TimeoutError:
            await _refuse(guarded, 408, "The request's body took too long to come.\n")
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, guarded)


async def _too_large(send: Callable) -> None:
    await _refuse(send, 413, f"Too large: at most {MAX_BODY // 1024} KiB may be sent.\n")


async def _refuse(send: Callable, status: int, words: str) -> None:
    text = words.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(text)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": text})


class PasswordChecks:
    """argon2 checks in a pool of :data:`CHECKERS` threads, so the pages stay quick while
    logins flood in; past :data:`CHECKS_WAITING` waiting, a check is refused (None)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(CHECKERS, thread_name_prefix="hub-argon2")
        self.waiting = 0

    async def verify(self, password_hash: str, password: str) -> bool | None:
        if self.waiting >= CHECKS_WAITING:
            return None
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.pool, _verify, password_hash, password)
        finally:
            self.waiting -= 1


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def same_token(given: str | None, expected: str | None) -> bool:
    """A CSRF token as expected: never an empty one; any text compared without error."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


class Answers:
    """Commands waiting for their machine's answer, keyed by command id."""

    def __init__(self) -> None:
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._lock = threading.Lock()

    def expect(self, command_id: str) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._waiting[command_id] = (loop, future)
        return future

    def forget(self, command_id: str) -> None:
        with self._lock:
            self._waiting.pop(command_id, None)

    def heard(self, batch: list[Heard]) -> None:
        for h in batch:
            if h.leaf != "cmd/result":
                continue
            with self._lock:
                waiting = self._waiting.pop(h.message.id or "", None)
            if waiting is not None:
                loop, future = waiting
                loop.call_soon_threadsafe(_settle, future, h.message)


def _settle(future: asyncio.Future, result: CommandResult) -> None:
    if not future.done():
        future.set_result(result)


class Web:
    """The web application; ``app`` is what uvicorn serves."""

    def __init__(self, config: HubConfig, store: HubStore, listener: Listener | None,
                 clock: Clock | None = None) -> None:
        self.config, self.store, self.listener = config, store, listener
        self.clock = clock or SystemClock()
        self.answers = Answers()
        self.checks = PasswordChecks()
        self.logins_failed = 0
        self._checking: set[str] = set()  # name@address with a password check under way
        self.registry = hub_metrics(self)
        self.secure = config.base_url.startswith("https://")
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(["html"]))
        self.templates.filters["ago"] = self._ago
        self.templates.filters["when"] = lambda m: humane.when(m, config.tz, self.clock.now())
        self.templates.filters["clock"] = lambda m: humane.clock(m, config.tz)
        self.templates.filters["num"] = humane.number
        self.templates.filters["duration"] = humane.duration
        self.templates.filters["sentence"] = lambda t: t[:1].upper() + t[1:] if t else t
        self.templates.globals["name_of"] = config.name_of
        # every page compiled now, not on each hub process's first showing of it (to staff
        # after a restart, a page tens of milliseconds slower)
        for name in self.templates.list_templates(filter_func=lambda n: n.endswith(".html")):
            self.templates.get_template(name)
        routes = [
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/", self.page(self.fleet)),
            Route("/fleet/tiles", self.page(self.fleet_tiles, program=True)),
            Route("/healthz", self.healthz),
            Route("/metrics", self.metrics),
            Route("/alerts", self.page(self.alerts_page)),
            Route("/alerts/{id}/ack", self.page(self.acknowledge, staff=True), methods=["POST"]),
            Route("/machines/{id}", self.page(self.machine_page)),
            Route("/machines/{id}/command", self.page(self.machine_command, staff=True),
                  methods=["POST"]),
            Route("/picklist", self.page(self.picklist)),
            Route("/picklist.csv", self.page(self.picklist_csv, program=True)),
            Route("/reports", self.page(self.reports_page)),
            Route("/reports/usage.csv", self.page(self.usage_csv, program=True)),
            Route("/tally", self.page(self.tally_page)),
            Route("/tally", self.page(self.tally_send, program=True, staff=True),
                  methods=["POST"]),
            Route("/tally-worker.js", self.tally_worker),
            Route("/tally/pictograms/{kind}.png", self.pictogram),
            Route("/activity", self.page(self.activity_page)),
            Route("/api/machines", self.page(self.api_machines, program=True)),
            Route("/api/machines/{id}/commands", self.page(self.api_command, program=True,
                                                           staff=True), methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        self.app = Guard(Starlette(routes=routes, exception_handlers={Exception: self._failed}))

    async def _failed(self, request: Request, error: Exception) -> Response:
        log.error("%s %s failed: %r", request.method, request.url.path, error,
                  exc_info=(type(error), error, error.__traceback__))
        return PlainTextResponse("Something went wrong on the hub (it is in the hub's log). "
                                 "Go back and try again.", 500)

    # -- sessions -----------------------------------------------------------------------------
    def page(self, handler: Callable[..., Awaitable[Response]], staff: bool = False,
             program: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """Wrap ``handler(request, user)``: a login first; staff only if ``staff``; a form
        POST must carry the session's CSRF token."""

        async def endpoint(request: Request) -> Response:
            user = self.user_of(request)
            if user is None:
                if program:
                    return JSONResponse({"error": "log in first: POST /login"}, 401)
                target = urllib.parse.quote(request.url.path)
                return RedirectResponse(f"/login?next={target}", 303)
            if request.method == "POST" and not program:
                form = await form_of(request)
                if not same_token(form.get("csrf"), user["csrf"]):
                    return PlainTextResponse("The form was too old or not ours: go back, "
                                             "reload the page and try again.", 403)
                request.state.form = form
            if staff and user["role"] != "staff":
                return (JSONResponse({"error": "viewers may read and download, not command"}, 403)
                        if program else PlainTextResponse("Only staff may command machines.", 403))
            return await handler(request, user)

        return endpoint

    def user_of(self, request: Request) -> dict | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        found = self.store.people.session(token)
        if found is None:
            return None
        name, role, csrf, created = found
        if self.clock.now() - parse_iso(created) > timedelta(hours=SESSION_HOURS):
            self.store.people.end_session(token)
            return None
        return {"name": name, "role": role, "csrf": csrf, "token": token}

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.templates.get_template(name).render(**context), status)

    async def login_page(self, request: Request, message: str = "", status: int = 200) -> Response:
        if message == "" and self.user_of(request) is not None:
            return RedirectResponse(_safe_next(request.query_params.get("next")) or "/", 303)
        token = secrets.token_urlsafe(24)
        response = self.render("login.html", status, message=message, csrf=token,
                               next=_safe_next(request.query_params.get("next")),
                               ended=request.query_params.get("ended") == "1")
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict",
                            secure=self.secure, max_age=3600)
        return response

    async def login(self, request: Request) -> Response:
        form = await form_of(request)
        if not same_token(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
            return await self.login_page(request, "The form was too old: please try again.", 403)
        name = form.get("username", "").strip()[:64]
        password = form.get("password", "")
        address = self.address_of(request)
        now = self.clock.now()
        # a name's wrong passwords slow that name from that address only, so strangers elsewhere
        # cannot lock a person out; an address's slow every name from it
        as_name = f"user:{name}@{address}"
        wait = max(self._wait(as_name, now), self._wait(f"ip:{address}", now))
        if wait > 0:
            return await self.login_page(
                request, f"Too many wrong passwords: wait {wait} seconds and try again.", 429)
        if as_name in self._checking:  # one check at a time for a name from an address:
            return await self.login_page(  # a burst in parallel must not outrun the wait
                request, "Another login for this name is being checked: try again.", 429)
        found = self.store.people.user(name) if name else None
        self._checking.add(as_name)
        try:
            ok = await self.checks.verify(found[1] if found else _DUMMY_HASH, password)
        finally:
            self._checking.discard(as_name)
        if ok is None:
            return await self.login_page(request, "The hub is busy checking other logins: try "
                                                  "again in a moment.", 503)
        ok = ok and found is not None
        if not ok:
            self.logins_failed += 1
            for who in (as_name, f"ip:{address}"):
                self.store.people.login_failed(who, now)
            log.warning("failed login for %r from %s", name[:40], address)
            return await self.login_page(request, "That name and password do not match.", 401)
        for who in (as_name, f"ip:{address}"):
            self.store.people.login_succeeded(who)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        self.store.people.new_session(token, name, csrf, now)
        self.store.people.end_sessions_before(now - timedelta(hours=SESSION_HOURS))
        log.info("%s logged in from %s", name, address)
        response = RedirectResponse(_safe_next(form.get("next")) or "/", 303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=self.secure,
                            max_age=SESSION_HOURS * 3600)
        response.delete_cookie(LOGIN_COOKIE)
        return response

    def address_of(self, request: Request) -> str:
        """Who is asking: the peer, or behind a proxy in ``web.trusted_proxies`` the last
        address in X-Forwarded-For that is not one of them (no one else is believed)."""
        peer = request.client.host if request.client else "?"
        if not self.config.trusted(peer):
            return peer
        # every X-Forwarded-For line (a proxy may add its own after the client's)
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        hops = [h.strip() for h in forwarded.split(",")]
        for hop in reversed([h for h in hops if h]):
            if not self.config.trusted(hop):
                return hop[:64]
        return peer

    def _wait(self, who: str, now: datetime) -> int:
        failures, last = self.store.people.login_failures(who)
        # an address is allowed more: several people may share one (a hostel, a phone mast)
        free = FREE_FAILURES if who.startswith("user:") else FREE_FAILURES_PER_ADDRESS
        if failures < free or last is None:
            return 0
        wait = min(MAX_WAIT_S, 2 ** (failures - free + 2))
        return max(0, math.ceil(wait - (now - parse_iso(last)).total_seconds()))

    async def logout(self, request: Request) -> Response:
        """End the session, whatever the form carries (at worst someone is logged out)."""
        user = self.user_of(request)
        if user:
            self.store.people.end_session(user["token"])
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE)
        return response

    # -- for whoever runs it ----------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        """No login: ``ok``, or what is wrong (503), for the proxy and systemd; nothing more."""
        wrong = []
        try:
            await asyncio.to_thread(self.store.ping)
        except Exception:  # any failure here means the same to a health check
            wrong.append("the store cannot be reached")
        if self.listener is None or not self.listener.connected.is_set():
            wrong.append("the broker is not connected")
        if wrong:
            return PlainTextResponse("; ".join(wrong) + "\n", 503)
        return PlainTextResponse("ok\n")

    async def metrics(self, request: Request) -> Response:
        """Prometheus' text format, for a login or the bearer token of ``web.metrics_token_file``."""
        token = self.config.metrics_token()
        given = request.headers.get("authorization", "")
        if not ((token and given.startswith("Bearer ") and same_token(given[7:], token))
                or self.user_of(request) is not None):
            return PlainTextResponse("log in, or send the bearer token\n", 401,
                                     headers={"WWW-Authenticate": "Bearer"})
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = await asyncio.to_thread(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    # -- the fleet ------------------------------------------------------------------------
    def tiles(self, area: str | None = None) -> list[board.Tile]:
        return board.tiles(self.config, self.store, self.clock.now(), area)

    def _board(self, request: Request) -> dict:
        params = request.query_params
        area = params.get("area") or None
        if area not in board.areas(self.config):
            area = None
        show = params.get("show", "")
        if show not in board.SHOW:
            show = ""
        search = params.get("q", "").strip()[:100]
        try:
            page = int(params.get("page", "1"))
        except ValueError:
            page = 1
        found = board.page_of(self.config, self.store, self.clock.now(), area, page, show,
                              search)
        filters = [(k, v) for k, v in (("area", area), ("show", show), ("q", search)) if v]
        query = urllib.parse.urlencode(
            filters + ([("page", found.page)] if found.pages > 1 else []))
        return {"tiles": found.tiles, "area": area, "show": show, "search": search,
                "shows": board.SHOW, "page": found.page, "pages": found.pages,
                "kept": found.kept, "known": found.known, "query": query,
                "filters": urllib.parse.urlencode(filters)}

    async def fleet(self, request: Request, user: dict) -> Response:
        return self.render("fleet.html", user=user, here="/", areas=board.areas(self.config),
                           asking=self.store.fleet.asking(), **self._board(request))

    async def fleet_tiles(self, request: Request, user: dict) -> Response:
        return self.render("_tiles.html", **self._board(request))

    # -- alerts -----------------------------------------------------------------------------
    async def alerts_page(self, request: Request, user: dict) -> Response:
        now = self.clock.now()
        rows = self.store.alerts.alert_log(now - timedelta(days=ALERT_DAYS))
        machines = {m.id: m for m in self.store.fleet.machines({r["machine"] for r in rows})}
        for r in rows:
            m = machines.get(r["machine"])
            r["product"] = alerts.product_of(m, r["type"], r["subject"])
            end = parse_iso(r["cleared"]) if r["cleared"] else now
            r["lasted"] = (end - parse_iso(r["raised"])).total_seconds()
            r["what"] = alerts.TYPE_WORDS.get(r["type"], r["type"].replace("_", " "))
        return self.render_once(request, "alerts.html", user=user, here="/alerts", days=ALERT_DAYS,
                           now_rows=[r for r in rows if not r["cleared"]],
                           past_rows=[r for r in rows if r["cleared"]],
                           notice=self._notice(request))

    async def acknowledge(self, request: Request, user: dict) -> Response:
        try:
            alert = int(request.path_params["id"])
        except ValueError:
            alert = 0
        if not 0 < alert < 2 ** 62:
            return PlainTextResponse("No such alert.", 404)
        with self.store.transaction():
            took = self.store.alerts.acknowledge(alert, user["name"], self.clock.now())
        text = ("Noted: you are on it. Others see \u201csomeone is on it\u201d." if took else
                "Not changed: someone is on it already, or it has ended.")
        target = _safe_next(request.state.form.get("next")) or "/alerts"
        return self._with_notice(RedirectResponse(target, 303), text)

    def _with_notice(self, response: Response, text: str) -> Response:
        response.set_cookie(NOTICE_COOKIE, urllib.parse.quote(text), max_age=120, httponly=True,
                            samesite="strict", secure=self.secure)
        return response

    @staticmethod
    def _notice(request: Request) -> str:
        return urllib.parse.unquote(request.cookies.get(NOTICE_COOKIE, ""))[:400]

    def render_once(self, request: Request, name: str, **context: Any) -> HTMLResponse:
        """A page that shows the notice left for it, once: not again on reload."""
        response = self.render(name, **context)
        if request.cookies.get(NOTICE_COOKIE):
            response.delete_cookie(NOTICE_COOKIE)
        return response

    # -- one machine ----------------------------------------------------------------------
    async def machine_page(self, request: Request, user: dict) -> Response:
        mid = request.path_params["id"]
        m = self.store.fleet.machine(mid)
        if m is None and mid not in self.config.machines:
            return PlainTextResponse(f"No machine {mid} has been heard.", 404)
        now = self.clock.now()
        tile = board.tile_of(self.config, self.store, m, mid, now, m.last_pack if m else None,
                             self.store.alerts.acknowledged(),
                             self.store.fleet.newest())
        stock = m.stock if m else None
        events = self.store.fleet.events(mid, 30)
        for e in events:
            e["product_name"] = humane.product_name(stock, e["product"]) if e["product"] else ""
        commands = self.store.commands.recent(mid, 30)
        for c in commands:
            c["words"] = command_words(c["command"], stock)
        today = now.astimezone(self.config.tz).date()
        dates = {s.slot: board.slot_date(stock, s, today, self.config.expiring_days)
                 for s in stock.slots} if stock else {}
        return self.render_once(
            request, "machine.html", user=user, m=m, tile=tile, mid=mid, events=events,
            dates=dates,
            commands=commands, modes=MODES, notice=self._notice(request),
            messages=board.current_messages(self.store, mid),
            until=board.expires_clock(self.config, now),
            product_name=lambda product: humane.product_name(stock, product))

    async def machine_command(self, request: Request, user: dict) -> Response:
        mid = request.path_params["id"]
        form = request.state.form
        m = self.store.fleet.machine(mid)
        stock = m.stock if m else None
        try:
            command = command_from_form(form)
        except ValueError as e:
            return self._back(mid, f"Not sent: {e}")
        if command["cmd"] in ("disable", "set_mode") and form.get("confirmed") != "yes":
            return self.render("confirm.html", user=user, mid=mid, form=form,
                               question=confirm_question(command, stock, self.config.name_of(mid)),
                               warning=confirm_warning(command, stock),
                               yes=confirm_yes(command))
        status, answer = await self.command(mid, command, user["name"])
        words = command_words(command, stock)
        if status == 504:
            text = (f"Sent, not answered yet: {lower_first(words)}. The machine may be offline; it "
                    f"will do it when it is back, until "
                    f"{board.expires_clock(self.config, self.clock.now())}.")
        elif status != 200:
            text = f"Not sent: {answer.get('error')}"
        elif answer.get("ok"):
            text = f"Done: {lower_first(words)}."
        else:
            text = f"The machine refused it: {answer.get('error')}"
        return self._back(mid, text)

    def _back(self, mid: str, notice: str) -> Response:
        return self._with_notice(RedirectResponse(f"/machines/{urllib.parse.quote(mid)}", 303),
                                 notice)

    async def command(self, mid: str, command: dict, user: str) -> tuple[int, dict]:
        """Send ``command`` to machine ``mid`` and wait for its answer: (HTTP status, body)."""
        if not MACHINE_ID.fullmatch(mid) or mid not in self.config.machines:
            return 404, {"error": f"no machine {mid[:64]!r} is known to the hub (nspvend hub "
                                  "machine add)"}
        if self.listener is None:
            return 503, {"error": "the hub is not connected to the broker"}
        try:
            sent = await asyncio.to_thread(self.listener.send_command, mid, command, user)
        except (OSError, ValueError) as e:  # the machine's command key, unreadable
            key = self.config.machines[mid].command_key_file
            log.error("cannot sign a command to %s: cannot read its key %s: %s", mid, key,
                      getattr(e, "strerror", None) or e)
            return 503, {"error": f"the hub cannot read {mid}'s command key ({key}): give "
                                  "the hub's user the file"}
        future = self.answers.expect(sent["id"])
        try:
            result = await asyncio.wait_for(future, ANSWER_TIMEOUT_S)
        except TimeoutError:
            return 504, {"id": sent["id"], "error": f"{mid} did not answer within "
                                                    f"{ANSWER_TIMEOUT_S:.0f} s"}
        finally:
            self.answers.forget(sent["id"])
        return 200, result.payload()

    # -- pick list --------------------------------------------------------------------------
    async def picklist(self, request: Request, user: dict) -> Response:
        chosen = request.query_params.getlist("machine")
        now = self.clock.now()
        rows, totals = board.pick_list(self.config, self.store, now, chosen)
        machines = [(m.id, self.config.name_of(m.id)) for m in self.store.fleet.machines()
                    if m.stock is not None]
        return self.render("picklist.html", user=user, here="/picklist", rows=rows,
                           totals=totals, machines=machines, chosen=chosen,
                           query=request.url.query, now=now)

    async def picklist_csv(self, request: Request, user: dict) -> Response:
        rows, _ = board.pick_list(self.config, self.store, self.clock.now(),
                                  request.query_params.getlist("machine"))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["machine", "slot", "product", "count", "capacity", "to_pack",
                         "days_until_empty", "status", "expires", "dates"])
        for r in rows:
            writer.writerow(humane.csv_row([r.machine, r.slot, r.product, r.count, r.capacity,
                                            r.need, "" if r.days is None else r.days,
                                            r.status, r.expires or "", r.dated]))
        return _csv(out.getvalue(), "picklist.csv")

    # -- reports ----------------------------------------------------------------------------
    async def reports_page(self, request: Request, user: dict) -> Response:
        kind = request.query_params.get("by", "month")
        if kind not in reports.KINDS:
            kind = "month"
        count = {"day": 14, "week": 12, "month": 12, "year": 3}[kind]
        now = self.clock.now()
        today = now.astimezone(self.config.tz).date()
        fleet = len(self.config.machines)
        by_machine = fleet <= reports.BY_MACHINE_AT_MOST
        spans = reports.fill(self.store, reports.periods(kind, today, count,
                                                         self.config.financial_year_start,
                                                         self.config.tz),
                             now=now, by_machine=by_machine)
        products = sorted({p for s in spans for p in [*s.fleet, *(p for ms in s.tallied.values()
                                                                   for p in ms)]})
        machines = sorted({m for s in spans for m in list(s.counts) + list(s.covered)})
        channels = self.channels(spans)
        first_of_month = today.replace(day=1)
        previous = (first_of_month - timedelta(days=1)).replace(day=1)
        return self.render(
            "reports.html", user=user, here="/reports", kind=kind, kinds=reports.KINDS, spans=spans,
            products=products, machines=machines, channels=channels,
            chart=reports.bar_chart(spans, "Packs given out, by "
                                    f"{'financial year' if kind == 'year' else kind}", channels),
            tz=self.config.timezone, product_names=self._product_names(),
            coverage=reports.coverage(self.store, self.config, now), config=self.config,
            by_machine=by_machine, fleet=fleet, now=now, at_most=reports.BY_MACHINE_AT_MOST,
            target=reports.TARGET_2030,
            month_from=previous.isoformat(), month_to=first_of_month.isoformat())

    def channels(self, spans: list[reports.Period] = ()) -> tuple[str, ...]:
        """People's channels: those configured, then any others the periods hold counts of
        (a channel since taken out of ``[tally] channels`` keeps its history)."""
        known = self.config.tally_channels
        return known + tuple(sorted({c for s in spans for c in s.tallied} - set(known)))

    def _product_names(self) -> dict[str, str]:
        """Each product's name as ``[tally] products`` or else the machines' stock say."""
        return {**self.store.fleet.product_names(), **dict(self.config.tally_products)}

    async def usage_csv(self, request: Request, user: dict) -> Response:
        try:
            start = date.fromisoformat(request.query_params.get("from", ""))
            end = date.fromisoformat(request.query_params.get("to", ""))
        except ValueError:
            return PlainTextResponse("from and to must be dates like 2026-11-01", 400)
        if not (2000 <= start.year <= 2200 and 2000 <= end.year <= 2200):
            return PlainTextResponse("from and to must be dates from 2000 to 2200", 400)
        if end <= start:
            return PlainTextResponse("to must be after from", 400)
        text = await asyncio.to_thread(reports.usage_csv, self.store, start, end, self.config.tz)
        return _csv(text, f"nspvend-usage-{start}-{end}.csv")

    # -- counts from people ------------------------------------------------------------------
    async def tally_page(self, request: Request, user: dict) -> Response:
        chosen = request.query_params.get("channel")
        return self.render("tally.html", user=user, here="/tally",
                           channels=self.config.tally_channels,
                           chosen=chosen if chosen in self.config.tally_channels else None,
                           products=tally.products(self.config, self._product_names()))

    async def tally_send(self, request: Request, user: dict) -> Response:
        """The page's waiting buckets: each kept (its counts replacing an earlier send of it)
        or refused with the field named; one bad bucket does not stop the others."""
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"ok": False, "error": "send the buckets as application/json"},
                                415)
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):
            return JSONResponse({"ok": False, "error": "the body is not JSON"}, 400)
        buckets = body.get("buckets") if isinstance(body, dict) else None
        if not isinstance(buckets, list) or not 1 <= len(buckets) <= tally.MAX_BUCKETS:
            return JSONResponse({"ok": False, "error": "buckets: must be a list of 1 to "
                                                       f"{tally.MAX_BUCKETS} tally buckets"}, 400)
        owner = body.get("user", user["name"])
        if owner != user["name"]:  # a page left open from another login: not this person's
            return JSONResponse({"ok": False, "error": f"user: these taps are "
                                 f"{ascii(owner)[:70]}'s, and {user['name']} is logged in: "
                                 "they are sent when that person logs in here"}, 409)
        offered = {p for p, _, _ in tally.products(self.config, self._product_names())}
        now = self.clock.now()
        answers = []
        for i, data in enumerate(buckets):
            given = data.get("id") if isinstance(data, dict) else None
            try:
                bucket = tally.tally_of(data, self.config.tally_channels, now, offered)
            except tally.BadTally as e:
                known = isinstance(given, str) and tally.TALLY_ID.fullmatch(given)
                answers.append({"id": given if known else None, "ok": False,
                                "error": f"buckets[{i}].{e}"[:300]})
                continue
            outcome = await asyncio.to_thread(self.store.tallies.record, bucket, user["name"])
            answer: dict[str, Any] = {"id": bucket.id, "ok": outcome != "taken",
                                      "outcome": outcome}
            if outcome == "taken":
                answer["error"] = (f"buckets[{i}].id: is another bucket's (another person's, "
                                   "channel's or hour's)")
            answers.append(answer)
        return JSONResponse({"ok": all(a["ok"] for a in answers), "buckets": answers})

    async def tally_worker(self, request: Request) -> Response:
        """The tally page's service worker: no secret in it, so no login (a browser fetches
        it by itself); served from the top so that its scope may be /tally."""
        return Response((HERE / "static" / "tally-worker.js").read_bytes(),
                        media_type="text/javascript")

    async def pictogram(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in tally.KINDS:
            return PlainTextResponse("No such pictogram.", 404)
        png = await asyncio.to_thread(tally.pictogram_png, kind)
        return Response(png, media_type="image/png")

    async def activity_page(self, request: Request, user: dict) -> Response:
        """Who did what in the last 30 days: commands, acknowledgements, and tallies by person
        and hour (never by tap)."""
        now = self.clock.now()
        since = iso(now - timedelta(days=ALERT_DAYS))
        rows: list[dict] = []
        actions = self.store.commands.staff_actions(since)
        machines = {m.id: m for m in self.store.fleet.machines({a["machine"] for a in actions})}
        for a in actions:
            m = machines.get(a["machine"])
            if a["kind"] == "command":
                result = ("no answer yet" if a["answered"] is None else
                          "done" if a["ok"] else "refused")
                what = f"{command_words(a['command'], m.stock if m else None)} ({result})"
            else:
                product = alerts.product_of(m, a["type"], a["subject"])
                what = ("On it: " + alerts.TYPE_WORDS.get(a["type"], a["type"].replace("_", " "))
                        + (f", {product}" if product else ""))
            rows.append({"at": a["at"], "who": a["user"], "what": what, "machine": a["machine"]})
        for who, start, end, channel, packs in self.store.tallies.activity(since):
            rows.append({"at": start, "until": end, "who": who, "machine": None,
                         "channel": channel,
                         "what": f"Tallied {humane.number(packs)} pack{'' if packs == 1 else 's'}"})
        rows.sort(key=lambda r: r["at"], reverse=True)
        return self.render("activity.html", user=user, here="/activity", rows=rows,
                           days=ALERT_DAYS)

    # -- JSON ------------------------------------------------------------------------------
    async def api_machines(self, request: Request, user: dict) -> Response:
        """Every machine, most urgent first; or, with ``?limit=N`` (1 to 1000) and
        ``?after=ID``, a page of them by id, a ``Link: <...>; rel="next"`` header saying
        where the next page is, while there is one."""
        paged = "limit" in request.query_params or "after" in request.query_params
        link = None
        if paged:
            try:
                limit = int(request.query_params.get("limit", "100"))
            except ValueError:
                limit = 0
            if not 1 <= limit <= 1000:
                return JSONResponse({"error": "limit: must be a whole number from 1 to 1000"},
                                    400)
            after = request.query_params.get("after", "")[:64]
            shown, more = board.tiles_by_id(self.config, self.store, self.clock.now(), after,
                                            limit)
            if more and shown:
                link = (f'</api/machines?limit={limit}&after='
                        f'{urllib.parse.quote(shown[-1].id)}>; rel="next"')
        else:
            shown = self.tiles()
        machines = {m.id: m for m in self.store.fleet.machines({t.id for t in shown})}
        body = []
        for tile in shown:
            m = machines.get(tile.id)
            body.append({"id": tile.id, "name": tile.name, "online": tile.online,
                         "last_heard": tile.last_heard, "mode": tile.mode,
                         "faults": list(m.state.faults) if m and m.state else [],
                         "stock": m.stock.payload() if m and m.stock else None})
        return JSONResponse(body, headers={"Link": link} if link else None)

    async def api_command(self, request: Request, user: dict) -> Response:
        mid = request.path_params["id"]
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "send the command as application/json"}, 415)
        try:
            command = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, 400)
        if not isinstance(command, dict) or command.get("cmd") not in COMMAND_NAMES:
            return JSONResponse({"error": f"cmd: must be one of {', '.join(sorted(COMMAND_NAMES))}"},
                                400)
        command = {k: v for k, v in command.items() if k not in ("id", "expires", "sig")}
        status, body = await self.command(mid, command, user["name"])
        return JSONResponse(body, status)

    def _ago(self, moment: str | None) -> str:
        if not moment:
            return "never"
        seconds = int((self.clock.now() - parse_iso(moment)).total_seconds())
        if seconds < 90:
            return f"{max(seconds, 0)} s ago"
        if seconds < 5400:
            return f"{seconds // 60} min ago"
        if seconds < 172800:
            return f"{seconds // 3600} h ago"
        return f"{seconds // 86400} days ago"


def hub_metrics(web: Web) -> Any:
    """The registry /metrics reads: what the listener stored and skipped per topic, its
    lag and the batches waiting, alerts raised now, deliveries failed, logins failed."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self) -> Any:
            listener = web.listener
            stored = CounterMetricFamily("nspvend_hub_messages_stored",
                                         "Machine messages stored, by topic", labels=["topic"])
            skipped = CounterMetricFamily("nspvend_hub_messages_skipped", "Machine messages "
                                          "skipped (not the contract, too large)",
                                          labels=["topic"])
            for leaf, n in sorted((listener.stored_by if listener else {}).items()):
                stored.add_metric([leaf], n)
            for leaf, n in sorted((listener.skipped_by if listener else {}).items()):
                skipped.add_metric([leaf], n)
            yield stored
            yield skipped
            yield CounterMetricFamily("nspvend_hub_messages_from_strangers", "Messages from "
                                      "ids nobody enrolled (not stored)",
                                      value=listener.strangers if listener else 0)
            yield GaugeMetricFamily("nspvend_hub_batches_waiting", "Messages heard and not "
                                    "yet stored", value=listener.waiting() if listener else 0)
            yield GaugeMetricFamily("nspvend_hub_lag_seconds", "Seconds since the last "
                                    "message from the broker",
                                    value=time.monotonic() - listener.last_heard
                                    if listener else 0)
            yield GaugeMetricFamily("nspvend_hub_broker_connected", "1 when connected",
                                    value=int(bool(listener and listener.connected.is_set())))
            try:  # the store away: the listener's figures still come
                raised = web.store.alerts.raised_count()
                given_up = web.store.alerts.deliveries_given_up()
            except Exception:  # whatever the database says, /metrics answers
                raised = given_up = None
            if raised is not None:
                yield GaugeMetricFamily("nspvend_hub_alerts_raised", "Alerts raised now",
                                        value=raised)
                yield GaugeMetricFamily("nspvend_hub_deliveries_given_up", "Alert deliveries "
                                        "given up (kept database.keep_events_days)",
                                        value=given_up)
            yield CounterMetricFamily("nspvend_hub_logins_failed", "Wrong passwords",
                                      value=web.logins_failed)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return registry


def lower_first(words: str) -> str:
    """``Slot 3 (Foil) refilled`` -> ``slot 3 (Foil) refilled``: only the first letter (a
    month or a product's name keeps its capitals)."""
    return words[:1].lower() + words[1:]


def command_words(command: dict, stock: Any) -> str:
    """A command in words: ``Slot 3 (Foil) refilled to 28``."""
    cmd = str(command.get("cmd", ""))  # as recorded: the JSON API's arguments unchecked here
    slot = command.get("slot")
    where = (humane.slot_words(stock, slot) if isinstance(slot, int)
             and not isinstance(slot, bool) else "A slot")
    if cmd == "refill":
        dated = (f", use by end of {humane.month_of(str(command['expiry']))}"
                 if command.get("expiry") else "")
        if command.get("all"):
            return f"Every slot refilled to capacity{dated}"
        taken = (f"; {command['expired']} past their date taken out"
                 if command.get("expired") else "")
        return f"{where} refilled to {command.get('count')}{dated}{taken}"
    if cmd == "disable":
        return f"{where} disabled"
    if cmd == "enable":
        return f"{where} enabled"
    if cmd == "clear_fault":
        return f"{where}: fault cleared"
    if cmd == "set_mode":
        return f"Mode set to {str(command.get('mode', '')).replace('_', ' ')}"
    if cmd == "set_messages":
        messages = command.get("messages")
        n = len(messages) if isinstance(messages, list) else 0
        return f"Signposting messages set ({n})" if n else "Signposting messages cleared"
    return cmd.replace("_", " ").capitalize() or "A command"


def confirm_question(command: dict, stock: Any, machine: str) -> str:
    if command["cmd"] == "disable":
        return f"Disable {humane.slot_words(stock, command['slot'])} at {machine}?"
    return f"Set {machine} to {str(command.get('mode', '')).replace('_', ' ')}?"


def confirm_warning(command: dict, stock: Any) -> str:
    if command["cmd"] == "disable":
        return ("The machine will not give out packs from this slot until someone enables it "
                "again, here or at the machine.")
    if command.get("mode") == "in_service":
        return "Clients will be able to use the machine."
    return "Clients will not be able to get anything from the machine until it is back in service."


def confirm_yes(command: dict) -> str:
    return "Yes, disable it" if command["cmd"] == "disable" else "Yes, change the mode"


def command_from_form(form: dict[str, str]) -> dict:
    """The command a machine page's form asks for (the machine checks the arguments)."""
    action = form.get("action", "")
    if action == "refill_all":
        return {"cmd": "refill", "all": True}
    if action in ("refill", "enable", "disable", "clear_fault"):
        command: dict[str, Any] = {"cmd": action, "slot": _int(form, "slot")}
        if action == "refill":
            command["count"] = _int(form, "count")
            if form.get("expiry", "").strip():  # a month input: 2027-03
                command["expiry"] = form["expiry"].strip()
            if form.get("expired", "").strip() not in ("", "0"):
                command["expired"] = _int(form, "expired")
        return command
    if action == "set_mode":
        return {"cmd": "set_mode", "mode": form.get("mode", "")}
    if action == "set_messages":
        lines = [line.strip() for line in form.get("messages", "").splitlines() if line.strip()]
        return {"cmd": "set_messages", "messages": lines}
    raise ValueError(f"no such action {action[:30]!r}")


def _int(form: dict[str, str], name: str) -> int:
    try:
        return int(form.get(name, ""))
    except ValueError:
        raise ValueError(f"{name} must be a whole number") from None


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last value of each), without python-multipart."""
    body = await request.body()  # at most MAX_BODY: Guard refuses more before it is read
    fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in fields.items()}


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never another site) to go back to after logging in."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


def _csv(text: str, filename: str) -> Response:
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def now_utc() -> datetime:
    return datetime.now(UTC)


__all__ = ["Web", "hash_password", "command_from_form", "compact"]
