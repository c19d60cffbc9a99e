"""`vnettracer store replay RUN_DIR`: send the batches a run could not send, in order."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from vnettracer.errors import VntError
from vnettracer.store import credentials
from vnettracer.store.client import Endpoint
from vnettracer.store.writer import pending_outboxes, replay


def _lab_addresses() -> set[str]:
    """Management addresses of the lab that is up on this machine (none without a lab)."""
    from vnettracer import lab

    try:
        running = lab.load()
    except VntError:
        return set()
    return {str(h.mgmt_ip.ip) for h in running.plan.hosts} if running else set()


def _target(run_dir: Path, meta: dict, url: str | None) -> str:
    """Where to send. A results folder may come from anyone: its recorded URL is used only when it
    points at the lab up on this machine; otherwise the user names the server (--url)."""
    if url:
        return url
    influx = meta.get("influxdb")
    if not isinstance(influx, dict) or not influx.get("url"):
        raise VntError(f"{run_dir}: this run did not use InfluxDB (sinks.influxdb.enabled); give --url to send anyway")
    recorded = str(influx["url"])
    if urlparse(recorded).hostname not in _lab_addresses():
        raise VntError(f"{run_dir}: its InfluxDB ({recorded}) is not the lab up on this machine; credentials are only "
                       f"sent to a server you name: give --url {recorded} if that is the one")
    return recorded


def replay_run(run_dir: Path, url: str | None = None, creds_file: Path | None = None) -> list[str]:
    from vnettracer import lab
    from vnettracer.analysis.inputs import read_meta

    meta = read_meta(run_dir)
    target = _target(run_dir, meta, url)
    # never the path meta.json names: --credentials, $VNT_INFLUXDB_CREDENTIALS, or the lab's own
    path = creds_file or credentials.credentials_file(lab.lab_dir())
    if not path.is_file():
        raise VntError(f"no InfluxDB credentials file ({path}); give --credentials FILE")
    creds = credentials.read(path)
    influx = meta["influxdb"] if isinstance(meta.get("influxdb"), dict) else {}
    ep = Endpoint(target, influx.get("database", "vnettracer"), creds["writer_user"], creds["writer_password"])
    outboxes = pending_outboxes(run_dir)
    if not outboxes:
        return [f"{run_dir}: nothing to send (no unsent batches)"]
    lines = []
    for ob in outboxes:
        st = replay(ep, ob, log=lambda m: None)
        lines.append(f"{ob.relative_to(run_dir)}: {st.points_sent} points sent to {ep.url}"
                     + (f", {st.rejected_batches} batches rejected (see {ob}/rejected)" if st.rejected_batches else ""))
    return lines
