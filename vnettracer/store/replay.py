"""`vnettracer store replay RUN_DIR`: send the batches a run could not send, in order."""

from __future__ import annotations

import json
from pathlib import Path

from vnettracer.errors import VntError
from vnettracer.store import credentials
from vnettracer.store.client import Endpoint
from vnettracer.store.writer import pending_outboxes, replay


def replay_run(run_dir: Path, url: str | None = None, creds_file: Path | None = None) -> list[str]:
    try:
        meta = json.loads((run_dir / "meta.json").read_text())
    except (OSError, ValueError):
        raise VntError(f"{run_dir} is not a run folder (no readable meta.json)") from None
    influx = meta.get("influxdb")
    if not influx and not url:
        raise VntError(f"{run_dir}: this run did not use InfluxDB (sinks.influxdb.enabled); give --url to send anyway")
    path = creds_file or (Path(influx["credentials"]) if influx and influx.get("credentials") else None)
    if path is None or not path.is_file():
        raise VntError(f"no InfluxDB credentials file ({path or 'none recorded'}); give --credentials FILE")
    creds = credentials.read(path)
    ep = Endpoint(url or influx["url"], (influx or {}).get("database", "vnettracer"), creds["writer_user"],
                  creds["writer_password"])
    outboxes = pending_outboxes(run_dir)
    if not outboxes:
        return [f"{run_dir}: nothing to send (no unsent batches)"]
    lines = []
    for ob in outboxes:
        st = replay(ep, ob, log=lambda m: None)
        lines.append(f"{ob.relative_to(run_dir)}: {st.points_sent} points sent to {ep.url}"
                     + (f", {st.rejected_batches} batches rejected (see {ob}/rejected)" if st.rejected_batches else ""))
    return lines
