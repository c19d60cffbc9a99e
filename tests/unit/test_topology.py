"""Lab addressing and naming as plain data (no root needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vnettracer.lab.topology import LabOptions, plan


def test_flannel_plan_addresses_follow_flannel():
    lp = plan("flannel-vxlan", LabOptions(hosts=3, containers_per_host=2))
    traced = lp.traced()
    assert [h.name for h in traced] == ["host1", "host2", "host3"]
    assert [str(h.pod_net) for h in traced] == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    assert [str(h.vtep_ip) for h in traced] == ["10.244.1.0", "10.244.2.0", "10.244.3.0"]
    assert str(traced[0].bridge_ip) == "10.244.1.1/24"
    assert [str(c.ip.ip) for c in traced[1].containers] == ["10.244.2.11", "10.244.2.12"]
    db = lp.host("db")
    assert db.role == "db" and db.underlay_ip is None and not db.containers


def test_addresses_unique_and_inside_their_ranges():
    lp = plan("flannel-vxlan", LabOptions(hosts=8, containers_per_host=8))
    o = lp.options
    mgmt = [h.mgmt_ip.ip for h in lp.hosts] + [lp.controller_ip.ip]
    under = [h.underlay_ip.ip for h in lp.traced()]
    pods = [c.ip.ip for h in lp.traced() for c in h.containers]
    for addrs, net in ((mgmt, o.mgmt_cidr), (under, o.underlay_cidr), (pods, o.pod_cidr)):
        assert len(set(addrs)) == len(addrs)
        assert all(a in net for a in addrs)


def test_names_fit_linux_limits_and_prefix():
    lp = plan("flannel-vxlan", LabOptions(hosts=8, containers_per_host=8))
    for ns in lp.netns_names():
        assert ns.startswith("vnt-")
    for h in lp.hosts:
        assert len(h.mgmt_peer) <= 15 and h.mgmt_peer.startswith("vnt-")
        for c in h.containers:
            assert len(c.host_veth) <= 15


def test_devices_exclude_management_link():
    lp = plan()
    assert lp.devices("host1") == ["eth0", "flannel.1", "cni0", "veth-c1"]
    assert lp.devices("host1", "c1") == ["eth0"]
    assert lp.devices("db") == []


def test_bridge_topology_is_one_host_two_containers():
    lp = plan("bridge")
    assert [h.name for h in lp.traced()] == ["host1"]
    assert len(lp.host("host1").containers) == 2
    assert "flannel.1" not in lp.devices("host1") and not lp.vxlan


@pytest.mark.parametrize("kw,msg", [
    ({"pod_cidr": "10.244.0.0/25"}, "too small"),
    ({"mgmt_cidr": "8.8.8.0/24"}, "not a private range"),
    ({"underlay_cidr": "10.244.5.0/24"}, "overlaps"),
    ({"mgmt_cidr": "10.199.0.0/29"}, "at least a /27"),
    ({"hosts": 0}, "greater than or equal to 1"),
])
def test_bad_options(kw, msg):
    with pytest.raises(ValidationError, match=msg):
        LabOptions(**kw)


def test_flannel_needs_two_hosts_and_topology_must_exist():
    with pytest.raises(ValueError, match="at least 2"):
        plan("flannel-vxlan", LabOptions(hosts=1))
    with pytest.raises(ValueError, match="unknown topology 'mesh'"):
        plan("mesh")


def test_delay_element_option():
    from vnettracer.lab.topology import DelayElement

    lp = plan("flannel-vxlan", LabOptions(delay=DelayElement(host="host2", us=500)))
    assert "vnt-delay" in lp.netns_names()
    with pytest.raises(ValueError, match="delay: needs topology flannel-vxlan"):
        plan("flannel-vxlan", LabOptions(delay=DelayElement(host="host7", us=500)))
    with pytest.raises(ValueError, match="delay: needs topology flannel-vxlan"):
        plan("bridge", LabOptions(delay=DelayElement(host="host1", us=500)))
    with pytest.raises(ValidationError):
        DelayElement(host="host1", us=0)


def test_options_read_back_from_lab_json_give_the_same_plan():
    """lab.json stores every option (defaults too): reading it back must not look like a vms-only
    option given to another topology."""
    for topology in ("flannel-vxlan", "bridge", "vms"):
        lp = plan(topology)
        again = plan(topology, LabOptions(**lp.options.model_dump(mode="json")))
        assert [h.name for h in again.hosts] == [h.name for h in lp.hosts]
    with pytest.raises(ValueError, match="options.vm is for topology vms"):
        plan("flannel-vxlan", LabOptions(vm={"memory_mb": 2048}))
