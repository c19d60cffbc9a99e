"""Writing line protocol to InfluxDB 1.x over HTTP with the standard library only: the part of the
store the agent needs on traced hosts (vnettracer.store.client adds queries into pandas)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from vnettracer.errors import VntError


class StoreError(VntError):
    """InfluxDB refused or could not be reached (status: the HTTP status, 0 when unreachable)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


@dataclass
class Endpoint:
    url: str  # http://HOST:PORT
    database: str = "vnettracer"
    user: str = ""
    password: str = ""
    retention_policy: str = ""  # "" = the database's default

    def __repr__(self) -> str:  # never print the password
        return f"Endpoint({self.url!r}, db={self.database!r}, user={self.user!r})"

    @classmethod
    def from_dict(cls, d: dict) -> "Endpoint":
        return cls(**{k: d[k] for k in ("url", "database", "user", "password", "retention_policy") if k in d})

    def auth_header(self) -> dict:
        # basic auth: influxd reads u/p from the URL (which logs keep) or this header, never a form body
        if not self.user:
            return {}
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def error_text(body: bytes) -> str:
    try:
        return json.loads(body).get("error", body.decode(errors="replace").strip())
    except ValueError:
        return body.decode(errors="replace").strip()[:200]


class LineWriter:
    """POST /write of line protocol with ns timestamps (one request per call, no session state)."""

    def __init__(self, ep: Endpoint, timeout_s: float = 30.0):
        self.ep = ep
        self.timeout = timeout_s

    def close(self) -> None:  # nothing held between requests
        pass

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.ep.url}/ping", timeout=self.timeout) as r:
                return r.status == 204
        except (OSError, urllib.error.URLError):
            return False

    def write(self, body: bytes) -> None:
        """Raises StoreError unless InfluxDB answered 204."""
        params = {"db": self.ep.database, "precision": "ns"}
        if self.ep.retention_policy:
            params["rp"] = self.ep.retention_policy
        req = urllib.request.Request(f"{self.ep.url}/write?{urllib.parse.urlencode(params)}", data=body,
                                     method="POST", headers=self.ep.auth_header())
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        except (OSError, urllib.error.URLError) as e:
            raise StoreError(f"InfluxDB at {self.ep.url} unreachable: {type(e).__name__}") from e
        if status != 204:
            raise StoreError(f"InfluxDB write refused: HTTP {status}: {error_text(text)}", status=status)
