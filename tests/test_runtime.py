"""Runtime control targets come from the same inventory, keys and known_hosts Ansible uses."""

from __future__ import annotations

from vnettracer import runtime
from vnettracer.spec import load


def test_targets_from_an_inventory(tmp_path):
    (tmp_path / "cluster.yml").write_text(
        "all:\n  vars:\n    ansible_user: admin\n    ansible_ssh_private_key_file: /keys/lab\n"
        "    ansible_ssh_common_args: -o UserKnownHostsFile=cluster_known_hosts -o StrictHostKeyChecking=yes\n"
        "  children:\n    traced:\n      hosts:\n        node1: {ansible_host: 192.0.2.11}\n"
        "        node2: {ansible_host: 192.0.2.12, tracer_venv: /srv/vnt}\n")
    exp = tmp_path / "exp.yml"
    exp.write_text("name: cl\ninventory: {file: cluster.yml}\nhosts:\n  node1: {role: traced}\n  node2: {role: traced}\n")
    (run,) = load(str(exp))
    t = runtime.targets(run)
    assert (t["node1"].address, t["node1"].user, t["node1"].key) == ("192.0.2.11", "admin", "/keys/lab")
    assert t["node1"].known_hosts == str(tmp_path / "cluster_known_hosts")
    assert t["node1"].python == "/opt/vnettracer/venv/bin/python" and t["node2"].python == "/srv/vnt/bin/python"
