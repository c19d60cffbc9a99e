"""Action `vnt_stdin_command`: a command given as argv, with `stdin`, run the way `raw` runs one
(through the connection's shell, with become where asked), so no Python module runs on the host.
The agent's start uses it: its config, which holds the InfluxDB writer's password, reaches the
host on stdin and never on a command line that any process there could read. Returns rc, stdout,
stderr (and their lines); fails on a non-zero rc."""

from __future__ import annotations

import shlex

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("argv", "stdin"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        argv = self._task.args.get("argv")
        if not isinstance(argv, list) or not argv:
            raise AnsibleActionFail("vnt_stdin_command: argv must be a non-empty list")
        stdin = self._task.args.get("stdin")
        res = self._low_level_execute_command(" ".join(shlex.quote(str(a)) for a in argv),
                                              in_data=None if stdin is None else str(stdin))
        result.update(rc=res["rc"], stdout=res["stdout"], stderr=res["stderr"], changed=True,
                      stdout_lines=res["stdout"].splitlines(), stderr_lines=res["stderr"].splitlines())
        if res["rc"] != 0:
            result.update(failed=True, msg="non-zero return code")
        return result
