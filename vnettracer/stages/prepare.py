"""Stage prepare: the patched kernel where the experiment asks for it, packages, the host package
where hosts have their own files, and InfluxDB when the run writes to it."""

from __future__ import annotations

from vnettracer import hostpkg, hosts
from vnettracer.stages import Context, Stage
from vnettracer.store import credentials
from vnettracer.store import deploy as store_deploy


class PrepareStage(Stage):
    name = "prepare"

    def run(self, ctx: Context) -> dict:
        exp, r = ctx.exp, ctx.run
        if exp.kernel.install:
            from vnettracer import kernel

            ctx.meta["kernel"] = kernel.prepare(r, ctx.inventory, ctx.dir, progress=ctx.say("prepare"))
        influx = exp.sinks.influxdb
        creds = None
        if influx.enabled:
            creds_dir = ctx.hosts.own_dir
            creds = credentials.load_or_create(creds_dir)
        store_args = store_deploy.role_args(creds, influx.database) if creds else {}
        host_vars = {} if ctx.hosts.shares_controller else hostpkg.role_vars()
        host_vars["vnt_host_package"] = not ctx.hosts.shares_controller or exp.uses_bcc  # playbooks/prepare.yml
        res = ctx.hosts.play("prepare", ctx.dir, progress=ctx.say("prepare"),
                             extravars={**host_vars, "tracer_bcc": exp.uses_bcc, **store_args.get("extravars", {})},
                             secrets=store_args.get("secrets"))
        rows = hosts.rows(res)  # the facts stage's, when every host reported them
        ctx.state["host_rows"] = rows if rows and all(row.kernel for row in rows) else None
        if creds:
            ep = ctx.endpoint = store_deploy.endpoint(res, influx.database, creds)
            ctx.meta["influxdb"] = {"url": ep.url, "database": ep.database, "raw_events": influx.raw_events,
                                    "credentials": str(credentials.credentials_file(creds_dir))}
        return {"changed": res.changed()}
