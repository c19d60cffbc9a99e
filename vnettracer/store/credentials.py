"""InfluxDB passwords: from a file the user gives, else generated once per lab (or inventory folder).

The file is JSON {"admin_password": ..., "writer_password": ...} (users may add admin_user,
writer_user), mode 0600. It travels to Ansible only as a secrets vars file (deleted after the run),
never in extra vars, environment or runner artifacts.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from vnettracer.errors import VntError

ENV = "VNT_INFLUXDB_CREDENTIALS"
ADMIN_USER, WRITER_USER = "vnt_admin", "vnt_writer"


def credentials_file(default_dir: Path) -> Path:
    """$VNT_INFLUXDB_CREDENTIALS if set, else default_dir/secrets/influxdb.json."""
    return Path(os.environ[ENV]) if os.environ.get(ENV) else default_dir / "secrets" / "influxdb.json"


def read(path: Path) -> dict[str, str]:
    """Users and passwords from a credentials file."""
    try:
        creds = json.loads(path.read_text())
    except OSError as e:
        raise VntError(f"{path}: {e.strerror}") from None
    except ValueError as e:
        raise VntError(f"{path}: not JSON ({e})") from None
    missing = [k for k in ("admin_password", "writer_password") if not creds.get(k)]
    if missing:
        raise VntError(f"{path}: missing {', '.join(missing)}")
    return {"admin_user": creds.get("admin_user", ADMIN_USER), "admin_password": creds["admin_password"],
            "writer_user": creds.get("writer_user", WRITER_USER), "writer_password": creds["writer_password"]}


def load_or_create(default_dir: Path) -> dict[str, str]:
    path = credentials_file(default_dir)
    if not path.is_file():
        if os.environ.get(ENV):
            raise VntError(f"{ENV}={path}: no such file")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"admin_password": secrets.token_urlsafe(24), "writer_password": secrets.token_urlsafe(24)}, f)
    return read(path)


def role_secrets(creds: dict[str, str]) -> dict[str, str]:
    """The role's variables (roles/influxdb), for run_playbook(secrets=...)."""
    return {f"influxdb_{k}": v for k, v in creds.items()}
