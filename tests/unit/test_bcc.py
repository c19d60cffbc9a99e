"""The bcc backend's pure parts: kernel offsets read from BTF, Debian's split headers merged."""

from __future__ import annotations

import re
import subprocess

from vnettracer.agent import bcc


def test_btf_offsets_agree_with_pahole():
    """The three offsets the bcc build reads the device's namespace with, from this kernel's BTF by
    our reader, are what pahole (dwarves) says (sk_buff.dev sits inside anonymous unions)."""
    got = bcc.kernel_offsets()
    for macro, (struct, member) in bcc.OFFSETS.items():
        out = subprocess.run(["pahole", "-C", struct, str(bcc.BTF_PATH)], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        m = re.search(rf"[\s*]{member};\s+/\*\s+(\d+)\s+\d+\s+\*/", out)
        assert m, f"pahole shows no {struct}.{member}"
        assert got[macro] == int(m.group(1)), (macro, got[macro], m.group(1))


def test_split_headers_merged_once_into_one_tree(tmp_path):
    common, flavour = tmp_path / "linux-headers-6.1.0-9-common", tmp_path / "linux-headers-6.1.0-9-amd64"
    (common / "include" / "linux").mkdir(parents=True)
    (common / "include" / "linux" / "kconfig.h").write_text("/* common */")
    (flavour / "include" / "generated").mkdir(parents=True)
    (flavour / "include" / "generated" / "autoconf.h").write_text("/* flavour */")
    (flavour / "scripts").symlink_to(common / "include")
    cache = tmp_path / "cache"
    out = bcc._merged(common, flavour, cache)
    assert (out / "include" / "linux" / "kconfig.h").read_text() == "/* common */"
    assert (out / "include" / "generated" / "autoconf.h").read_text() == "/* flavour */"
    assert (out / "scripts" / "linux" / "kconfig.h").exists()
    (common / "include" / "linux" / "new.h").write_text("")
    assert bcc._merged(common, flavour, cache) == out and not (out / "include" / "linux" / "new.h").exists()  # kept
    assert [p.name for p in cache.iterdir()] == [flavour.name]  # no temporary tree left
