"""The controller's InfluxDB 1.x client (influxdb-python): write line protocol, admin statements,
queries into pandas frames.

Every query our helpers send is bounded in time (an unbounded `GROUP BY time()` once made influxd
grow to 24 GB): `check_bounded` refuses a SELECT without both a lower and an upper time bound before
anything is sent. Results come back chunked (JSON, one object per chunk) so large answers are never
held by the server as one response.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from contextlib import contextmanager

import pandas as pd

from vnettracer.store.http import Endpoint, StoreError, error_text

__all__ = ["Endpoint", "Influx", "QueryRefused", "StoreError", "check_bounded"]


class QueryRefused(StoreError):
    """A query our helpers will not send (no time bound)."""


_SELECT = re.compile(r"^\s*select\b", re.I)
_LOWER = re.compile(r"\btime\s*(>=|>)\s*", re.I)
_UPPER = re.compile(r"\btime\s*(<=|<)\s*", re.I)


def check_bounded(q: str) -> None:
    """Raise QueryRefused unless every SELECT in `q` has `time >(=) ...` and `time <(=) ...`."""
    for stmt in filter(str.strip, q.split(";")):
        if not _SELECT.match(stmt):
            continue
        where = re.split(r"\bwhere\b", stmt, maxsplit=1, flags=re.I)
        cond = where[1] if len(where) == 2 else ""
        if not (_LOWER.search(cond) and _UPPER.search(cond)):
            raise QueryRefused(f"refused (not sent): a SELECT needs a lower and an upper time bound: {stmt.strip()}")


def _ts(t) -> str:
    """A time bound as an InfluxQL ns literal, from int ns, a datetime/Timestamp or a string (UTC if naive)."""
    if isinstance(t, int) and not isinstance(t, bool):
        return str(t)
    ts = pd.Timestamp(t)
    return str((ts.tz_localize("UTC") if ts.tzinfo is None else ts).value)


class Influx:
    """The controller's client, on the influxdb library (influxdb-python): admin statements and
    bounded queries into pandas. The agents write with the standard library instead (store/http.py,
    store/writer.py): the host package carries only numpy and pyarrow."""

    def __init__(self, ep: Endpoint, timeout_s: float = 30.0):
        from influxdb import InfluxDBClient

        u = urllib.parse.urlsplit(ep.url)
        self.ep = ep
        # basic auth from user/password (influxd also reads them from the URL, which logs keep);
        # one try: our callers (the writer's outbox, the tests) decide about retries themselves
        self.client = InfluxDBClient(host=u.hostname or "localhost", port=u.port or 8086, username=ep.user,
                                     password=ep.password, database=ep.database, ssl=u.scheme == "https",
                                     verify_ssl=u.scheme == "https", timeout=timeout_s, retries=1, path=u.path)

    def close(self) -> None:
        self.client.close()

    def ping(self) -> bool:
        try:
            self.client.ping()
            return True
        except Exception:  # noqa: BLE001 - unreachable, refused, timed out: not answering
            return False

    def write(self, body: bytes) -> None:
        """One POST /write of line protocol with ns timestamps (sent as given); StoreError unless 204."""
        params = {"db": self.ep.database, "precision": "ns"}
        if self.ep.retention_policy:
            params["rp"] = self.ep.retention_policy
        with self._errors("write"):
            self.client.request("write", "POST", params=params, data=body, expected_response_code=204,
                                headers={"Content-Type": "application/octet-stream"})

    def execute(self, q: str, method: str = "POST") -> list[dict]:
        """A statement that is not a SELECT (SHOW, CREATE, DROP, ...); returns the results list."""
        if _SELECT.match(q):
            raise QueryRefused("use query() for SELECT statements")
        with self._errors("query"):
            rs = self.client.query(q, epoch="ns", method=method)
        return [r.raw for r in (rs if isinstance(rs, list) else [rs])]

    def query(self, q: str, chunk_size: int = 50_000) -> pd.DataFrame:
        """A bounded SELECT, read in chunks; one frame with `time` (ns, UTC) and the tag columns of
        any GROUP BY. Refused before sending if it has no time bound."""
        check_bounded(q)
        frames = []
        for res in self._chunks(q, chunk_size):
            for s in res.get("series", []):
                df = pd.DataFrame(s.get("values", []), columns=s["columns"])
                for k, v in (s.get("tags") or {}).items():
                    df[k] = v
                df.insert(0, "measurement", s.get("name", ""))
                frames.append(df)
        if not frames:
            return pd.DataFrame()
        df = pd.concat(frames, ignore_index=True)
        if "time" in df:
            df["time"] = pd.to_datetime(df["time"].astype("int64"), unit="ns", utc=True)
        return df

    def _chunks(self, q: str, chunk_size: int) -> list[dict]:
        """The results of a chunked query. Read here, not by the library's chunked reader, which
        drops an error a chunk carries (e.g. max-select-buckets exceeded): that must raise."""
        params = {"q": q, "db": self.ep.database, "epoch": "ns", "chunked": "true", "chunk_size": str(chunk_size)}
        with self._errors("query"):
            r = self.client.request("query", "POST", params=params, stream=True, expected_response_code=200,
                                    headers={"Accept": "application/json"})  # the library asks for msgpack
            results = [res for line in r.iter_lines() if line for res in json.loads(line).get("results", [])]
        for res in results:
            if "error" in res:
                raise StoreError(f"InfluxDB: {res['error']}")
        return results

    @contextmanager
    def _errors(self, what: str):
        """The library's and its transport's errors as one StoreError (status: HTTP, 0 unreachable)."""
        import requests
        from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError

        try:
            yield
        except InfluxDBClientError as e:
            raise StoreError(f"InfluxDB {what} refused: HTTP {e.code}: {error_text(str(e.content).encode())}",
                             status=int(e.code or 0)) from None
        except InfluxDBServerError as e:
            raise StoreError(f"InfluxDB {what} failed: {e}", status=500) from None
        except requests.RequestException as e:
            raise StoreError(f"InfluxDB at {self.ep.url} unreachable: {type(e).__name__}") from e

    def select(self, measurement: str, start, end, fields: str = "*", where: dict[str, str] | None = None,
               group_by: str = "", chunk_size: int = 50_000) -> pd.DataFrame:
        """SELECT fields FROM measurement in [start, end), tag equality filters, optional GROUP BY."""
        conds = [f"time >= {_ts(start)}", f"time < {_ts(end)}"]
        conds += [f"{quote_ident(k)} = '{_str_lit(v)}'" for k, v in (where or {}).items()]
        q = f"SELECT {fields} FROM {quote_ident(measurement)} WHERE {' AND '.join(conds)}"
        if group_by:
            q += f" GROUP BY {group_by}"
        return self.query(q, chunk_size)

    def count(self, measurement: str, field: str, start, end, where: dict[str, str] | None = None,
              group_by: str = "") -> pd.DataFrame:
        return self.select(measurement, start, end, f"count({quote_ident(field)})", where, group_by)


def quote_ident(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _str_lit(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")

