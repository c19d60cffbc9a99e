"""bpf/vnettracer.h (as compiled into the BPF object) and the Python decoder agree."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from vnettracer import ROOT
from vnettracer.agent import record
from vnettracer.agent.tracer import DEFAULT_OBJECT

MIRRORS = {"vnt_event": record.EVENT, "vnt_hook_key": record.HOOK_KEY, "vnt_hook": record.HOOK,
           "vnt_hook_slot": record.HOOK_SLOT, "vnt_flow": record.FLOW, "vnt_config": record.CONFIG, "vnt_stage": record.STAGE}


@pytest.fixture(scope="module")
def btf():
    assert DEFAULT_OBJECT.is_file(), "build/bpf/trace.bpf.o missing: `make bpf` (make test runs it)"
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(DEFAULT_OBJECT)],
                         capture_output=True, text=True, check=True).stdout
    # types only: a map may share its struct's name (vnt_stage), as a VAR
    return {t["name"]: t for t in json.loads(out)["types"] if t.get("name") and t["kind"] in ("STRUCT", "ENUM")}


@pytest.mark.parametrize("name", sorted(MIRRORS))
def test_struct_layout_matches(btf, name):
    t, dt = btf[name], MIRRORS[name]
    assert t["kind"] == "STRUCT"
    assert t["size"] == dt.itemsize, f"{name}: C {t['size']} bytes, Python {dt.itemsize}"
    c_fields = [(m["name"], m["bits_offset"] // 8) for m in t["members"]]
    py_fields = [(n, dt.fields[n][1]) for n in dt.names]
    assert c_fields == py_fields


def test_counters_enum_matches(btf):
    vals = {v["name"]: v["val"] for v in btf["vnt_counter"]["values"]}
    assert vals.pop("VNT_C_MAX") == record.COUNTERS_MAX
    assert [k.removeprefix("VNT_C_").lower() for k, v in sorted(vals.items(), key=lambda kv: kv[1])] == record.COUNTERS
    assert sorted(vals.values()) == list(range(len(record.COUNTERS)))


def test_tag_counters_enum_matches():
    tag_obj = ROOT / "build" / "bpf" / "tag.bpf.o"
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(tag_obj)], capture_output=True, text=True,
                         check=True).stdout
    (enum,) = [t for t in json.loads(out)["types"] if t.get("name") == "vnt_tag_counter"]
    vals = {v["name"]: v["val"] for v in enum["values"]}
    assert vals.pop("VNT_TAG_C_MAX") == len(record.TAG_COUNTERS)
    assert [k.removeprefix("VNT_TAG_C_").lower() for k, v in sorted(vals.items(), key=lambda kv: kv[1])] == \
        record.TAG_COUNTERS


def test_hook_slot_formula():
    """record.hook_slot is vnt_hook_slot() of bpf/vnettracer.h (the BPF side is checked against it
    in tests/lab/test_bpf_parse.py): in range, and spreading one device's index over namespaces."""
    slots = {record.hook_slot(c, 2, 0) for c in range(1, 4097)}
    assert all(0 <= s < record.HOOK_SLOTS for s in slots) and len(slots) > 600
    assert record.hook_slot(5, 2, 0) != record.hook_slot(5, 2, 1)


def test_defines_match():
    header = (ROOT / "bpf" / "vnettracer.h").read_text()
    defines = {m[0]: int(m[1], 0) for m in re.findall(r"#define (VNT_\w+) (0x[0-9a-fA-F]+|\d+)", header)}
    assert defines["VNT_TCPOPT_KIND"] == record.TCPOPT_KIND
    assert defines["VNT_TCPOPT_LEN"] == record.TCPOPT_LEN
    assert defines["VNT_TCPOPT_EXID"] == record.TCPOPT_EXID
    assert defines["VNT_MAX_TRACEPOINTS"] == record.MAX_TRACEPOINTS
    assert defines["VNT_MAX_FLOWS"] == record.MAX_FLOWS
    assert defines["VNT_HOOK_SLOTS"] == record.HOOK_SLOTS
    assert defines["VNT_PAYLOAD_BYTES"] == record.PAYLOAD_BYTES
    for flag in ("IDENTITY", "ENCAP", "EGRESS", "IPV6", "VLAN"):
        assert defines[f"VNT_F_{flag}"] == getattr(record, f"F_{flag}")
    ids = dict(re.findall(r"(VNT_ID_\w+) = (\d+)", header))
    assert {k: int(v) for k, v in ids.items()} == {"VNT_ID_NONE": 0, "VNT_ID_TAG": 1, "VNT_ID_HASH": 2, "VNT_ID_PAYLOAD": 3}
    assert (record.ID_TAG, record.ID_HASH, record.ID_PAYLOAD) == (1, 2, 3)


def test_control_commands_from_one_table():
    """The agent, `hostcli agent ctl` and runtime.py share one command table (agent/control.py)."""
    from vnettracer.agent import control

    assert control.build_request("set", "a,b") == {"cmd": "set", "names": ["a", "b"]}
    assert control.build_request("set", "") == {"cmd": "set", "names": []}
    assert control.build_request("sampling", "100") == {"cmd": "sampling", "n": 100}
    assert control.build_request("add", '{"name": "x"}') == {"cmd": "add", "tracepoint": {"name": "x"}}
    assert control.build_request("stats") == {"cmd": "stats"}
    bad = control.dispatch(None, {"cmd": "reboot"})
    assert bad["ok"] is False and "known: stats, add, remove, set, sampling, stop" in bad["error"]
    assert control.dispatch(None, {"cmd": "remove"})["ok"] is False  # a bad request is answered, not raised
