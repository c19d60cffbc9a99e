"""Deploy (or stop) InfluxDB on the db host through roles/influxdb; endpoints for the writer."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vnettracer.errors import VntError
from vnettracer.orchestrate import PlaybookResult, run_playbook
from vnettracer.store.client import Endpoint
from vnettracer.store.credentials import role_secrets


def influxdb(inventory: Path, workdir: Path, creds: dict[str, str], database: str = "vnettracer",
             state: str = "started", progress: Callable[[str], None] | None = None,
             ) -> tuple[PlaybookResult, Endpoint | None]:
    """Run the influxdb part of the prepare stage; returns the result and the writer's endpoint."""
    r = run_playbook("prepare", inventory, workdir, tags="influxdb", limit="db", progress=progress,
                     extravars={"vnt_influxdb": True, "influxdb_database": database, "influxdb_state": state},
                     secrets=role_secrets(creds)).raise_for_failures()
    if state != "started":
        return r, None
    reports = [hr.reports["influxdb"] for hr in r.hosts.values() if "influxdb" in hr.reports]
    if not reports:
        raise VntError("influxdb: the inventory has no host in group 'db'")
    return r, writer_endpoint(reports[0]["url"], database, creds)


def writer_endpoint(url: str, database: str, creds: dict[str, str]) -> Endpoint:
    return Endpoint(url, database, creds["writer_user"], creds["writer_password"])


def admin_endpoint(url: str, database: str, creds: dict[str, str]) -> Endpoint:
    return Endpoint(url, database, creds["admin_user"], creds["admin_password"])
