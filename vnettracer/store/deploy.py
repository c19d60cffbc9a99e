"""InfluxDB on the db host through roles/influxdb (part of the prepare stage); endpoints for the writer."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vnettracer.errors import VntError
from vnettracer.orchestrate import PlaybookResult, run_playbook
from vnettracer.store.client import Endpoint
from vnettracer.store.credentials import role_secrets


def role_args(creds: dict[str, str], database: str, state: str = "started") -> dict:
    """run_playbook keyword arguments that turn roles/influxdb on (passwords as secrets)."""
    return {"extravars": {"vnt_influxdb": True, "influxdb_database": database, "influxdb_state": state},
            "secrets": role_secrets(creds)}


def endpoint(r: PlaybookResult, database: str, creds: dict[str, str], admin: bool = False) -> Endpoint:
    """The server the role reported (its URL on the management network), as writer or admin."""
    reports = [hr.reports["influxdb"] for hr in r.hosts.values() if "influxdb" in hr.reports]
    if not reports:
        raise VntError("influxdb: the inventory has no host in group 'db'")
    who = "admin" if admin else "writer"
    return Endpoint(reports[0]["url"], database, creds[f"{who}_user"], creds[f"{who}_password"])


def influxdb(inventory: Path, workdir: Path, creds: dict[str, str], database: str = "vnettracer",
             state: str = "started", progress: Callable[[str], None] | None = None,
             ) -> tuple[PlaybookResult, Endpoint | None]:
    """Only the influxdb part of the prepare stage; returns the result and the writer's endpoint."""
    r = run_playbook("prepare", inventory, workdir, tags="influxdb", limit="db", progress=progress,
                     **role_args(creds, database, state)).raise_for_failures()
    return r, (endpoint(r, database, creds) if state == "started" else None)


def admin_endpoint(ep: Endpoint, creds: dict[str, str]) -> Endpoint:
    return Endpoint(ep.url, ep.database, creds["admin_user"], creds["admin_password"])
