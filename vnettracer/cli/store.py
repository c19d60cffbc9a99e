"""`vnettracer store deploy|serve|replay`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vnettracer.cli.common import _progress, _stop_bar, experiment_arg, out, run_hosts

app = typer.Typer(no_args_is_help=True, help="InfluxDB: deploy it for an experiment; send what a run could not.")


@app.command("deploy")
def store_deploy(experiment: str = experiment_arg(),
                 stop: bool = typer.Option(False, "--stop", help="stop it instead (its data stays)")) -> None:
    """InfluxDB on the experiment's db host (roles/influxdb), with its database and users; prints its URL
    and where the credentials are."""
    from vnettracer.store import credentials
    from vnettracer.store import deploy as store_deploy_

    hosts = run_hosts(experiment)
    creds = credentials.load_or_create(hosts.own_dir)
    database = hosts.exp.sinks.influxdb.database
    _, ep = store_deploy_.influxdb(hosts.inventory, hosts.adhoc_workdir(), creds, database,
                                   state="stopped" if stop else "started", progress=_progress)
    _stop_bar()
    if ep is None:
        out.print("InfluxDB stopped")
        return
    out.print(f"InfluxDB at {ep.url}, database {ep.database}; credentials: {credentials.credentials_file(hosts.own_dir)}")


@app.command("serve")
def store_serve(
    run_dir: Path = typer.Argument(..., help="a finished run folder"),
    port: int = typer.Option(8087, help="HTTP port on 127.0.0.1 (the next one is its backup port)"),
    data: Optional[Path] = typer.Option(None, help="data folder (default RUN_DIR/influxdb; kept: the next serve "
                                        "starts from it)"),
    events: bool = typer.Option(False, "--events", help="every traced event too (vnt_event), not only the "
                                "per-second segment summaries"),
    seconds: Optional[float] = typer.Option(None, "--for", help="stop after this many seconds (default: Ctrl-C)"),
) -> None:
    """A finished run's data in an InfluxDB of its own on this machine, until Ctrl-C."""
    import time

    from vnettracer.store.serve import serve

    server, ep, loaded = serve(run_dir, data, port, events, log=lambda m: out.print(m, highlight=False))
    try:
        if loaded:
            out.print(f"loaded {loaded['segment_points']} segment points and {loaded['events']} events")
        out.print(f"InfluxDB at {ep.url}, database {ep.database}, user {ep.user}; password in "
                  f"{server.dir / 'secrets' / 'influxdb.json'}; data in {server.dir}")
        out.print(f"""  e.g. SELECT p99_us FROM vnt_segment WHERE run = '{run_dir.resolve().name}' AND time > 0 AND time < now()""")
        out.print("serving until Ctrl-C" if seconds is None else f"serving for {seconds:g} s")
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        server.stop()
        out.print("InfluxDB stopped; its data stays in " + str(server.dir))


@app.command("replay")
def store_replay(
    run_dir: Path = typer.Argument(..., help="a run folder whose meta.json names its InfluxDB"),
    url: Optional[str] = typer.Option(None, help="send to this server instead (http://HOST:PORT)"),
    credentials_file: Optional[Path] = typer.Option(None, "--credentials", help="InfluxDB credentials JSON "
                                                    "(default: $VNT_INFLUXDB_CREDENTIALS, else the lab's)"),
) -> None:
    """Send a run's unsent InfluxDB batches (agents' outboxes and the report's), oldest first."""
    from vnettracer.store.replay import replay_run

    for line in replay_run(run_dir, url, credentials_file):
        out.print(line, highlight=False)
