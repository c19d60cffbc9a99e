"""Action `vnt_collect`: one task per host for what were four (tasks/main.yml): `argv` (hostcli
collect pack --stop-agent ... --out ARCHIVE) run the way `raw` runs a command, the archive fetched
to `dest` against the sha1 the pack printed (roles/hostpkg's vnt_fetch: no stat module run), and
removed from the host whatever happened. Each task costs the controller tens of ms per host.

Returns `msg`: the files per kind the pack found (the task is a "report:" one), and `packed`:
false where the archive could not be written (a full disk: rc, stderr; tasks/fetch-files.yml then
fetches file by file). Fails after the fetch when the pack's exit says the agent did not stop
(PACKED_AGENT_FAILED in vnettracer/hostcli.py), with the agent's error: nothing is lost."""

from __future__ import annotations

import json
import shlex

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

PACKED_AGENT_FAILED = 4


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _VALID_ARGS = frozenset(("argv", "archive", "dest"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        argv, archive, dest = (self._task.args.get(k) for k in ("argv", "archive", "dest"))
        if not isinstance(argv, list) or not argv or not archive or not dest:
            raise AnsibleActionFail("vnt_collect: argv (a list), archive and dest are needed")
        try:
            pack = self._low_level_execute_command(shlex.join(map(str, argv)))
            result.update(rc=pack["rc"], stderr=pack["stderr"], changed=True)
            if pack["rc"] not in (0, PACKED_AGENT_FAILED):
                result.update(packed=False, msg={})
                return result
            out = json.loads(pack["stdout"])
            fetched = self._fetch(str(archive), str(dest), out["sha1"], task_vars)
            if fetched.get("failed"):
                return {**result, **fetched}
        finally:
            self._low_level_execute_command(f"rm -f -- {shlex.quote(str(archive))}")
        result.update(packed=True, msg=out.get("spool", 0), dest=str(dest))
        if pack["rc"] == PACKED_AGENT_FAILED:
            result.update(failed=True, msg=f"the agent did not stop: {pack['stderr'].strip()}")
        return result

    def _fetch(self, src: str, dest: str, sha1: str, task_vars) -> dict:
        task = self._task.copy()
        task.args = {"src": src, "dest": dest, "flat": True, "checksum": sha1}
        fetch = self._shared_loader_obj.action_loader.get(
            "ansible.legacy.vnt_fetch", task=task, connection=self._connection, play_context=self._play_context,
            loader=self._loader, templar=self._templar, shared_loader_obj=self._shared_loader_obj)
        return fetch.run(task_vars=task_vars)
