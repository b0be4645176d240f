"""A person's browser without the browser: log in to the hub over HTTP, keep the cookie,
fill in forms with their hidden fields, read JSON and CSV."""

from __future__ import annotations

import csv
import http.cookiejar
import io
import json
import re
import statistics
import time
import urllib.error
import urllib.parse
import urllib.request


class HubClient:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.headers: dict[str, str] = {}  # sent with every request (X-Forwarded-For, say)

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None,
                method: str | None = None) -> tuple[int, str, str]:
        """``(status, final url, body)`` (errors are answers too)."""
        req = urllib.request.Request(self.base + path, data=data,
                                     headers={**self.headers, **(headers or {})}, method=method)
        try:
            with self.opener.open(req, timeout=60) as response:
                return response.status, response.url, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.url, e.read().decode()

    def get(self, path: str) -> tuple[int, str, str]:
        return self.request(path)

    def median_get(self, path: str, runs: int = 5) -> float:
        """The median time, in seconds, of ``runs`` GETs of ``path`` (each must answer 200)."""
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            status, _, _ = self.get(path)
            times.append(time.perf_counter() - t)
            assert status == 200, (path, status)
        return statistics.median(times)

    def post_form(self, path: str, page: str, **fields: str) -> tuple[int, str, str]:
        """Post a form as a browser would: the hidden fields ``page`` carries, plus ``fields``."""
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
        body = urllib.parse.urlencode({**hidden, **fields}).encode()
        return self.request(path, body, {"Content-Type": "application/x-www-form-urlencoded"})

    def login(self, name: str, password: str) -> tuple[int, str, str]:
        status, _, page = self.get("/login")
        assert status == 200, status
        return self.post_form("/login", page, username=name, password=password)

    def json(self, path: str) -> object:
        status, _, body = self.get(path)
        assert status == 200, (status, body[:300])
        return json.loads(body)

    def post_json(self, path: str, body: object) -> tuple[int, object]:
        status, _, text = self.request(path, json.dumps(body).encode(),
                                       {"Content-Type": "application/json"})
        return status, json.loads(text) if text.startswith(("{", "[")) else text

    def csv(self, path: str) -> list[dict]:
        status, _, body = self.get(path)
        assert status == 200, (status, body[:300])
        return list(csv.DictReader(io.StringIO(body)))
