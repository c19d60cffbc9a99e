# vnettracer: the two commands a user needs are `make experiment NAME=quickstart` and `make test`.
# Both run `setup` first, which installs only what is missing and says what it did.

SHELL      := /bin/bash
PYTHON     ?= python3
VENV       ?= .venv
VPY        := $(VENV)/bin/python
NAME       ?= quickstart
TOPOLOGY   ?= flannel-vxlan
PYTEST_ARGS ?=

# Debian packages, by what needs them. The controller and the netns lab (its hosts share this root
# fs): every command. The patched kernel's build: `make kernel`, the kernel and VM tests. The VM lab
# (topology vms): QEMU, a debootstrap root, busybox for the boot test's initramfs. The tests: also
# chromium (the HTML report is rendered), tmux (`vnettracer top` is watched in it), nftables (a
# service NAT on the lab) and all of the above.
APT_BASE   := openssh-server openssh-client iproute2 tcpdump python3 python3-apt python3-venv \
              clang llvm libbpf-dev libbpf1 bpftool \
              socat iperf3 sockperf redis-server redis-tools procps psmisc ethtool influxdb
APT_KERNEL := linux-source-6.1 linux-config-6.1 bc flex bison libelf-dev libssl-dev cpio xz-utils patch gcc \
              libc6-dev dpkg-dev rsync kmod dwarves
APT_VMS    := $(APT_KERNEL) qemu-system-x86 qemu-utils busybox-static debootstrap e2fsprogs
# bcc (the tracer's bcc backend, the overhead experiment's 2018 tracer) and kernel headers to compile
# with (any kernel's on a kernel with BTF: vnettracer/agent/bcc.py)
APT_BCC    := python3-bpfcc linux-headers-$(shell dpkg --print-architecture 2>/dev/null || echo amd64)
APT_TEST   := $(APT_VMS) $(APT_BCC) chromium tmux nftables
# an experiment on the VM lab needs the VM packages too; one that uses bcc, bcc's
EXP_FILE   := $(if $(wildcard $(NAME)),$(NAME),experiments/$(NAME).yml)
EXP_APT    := $(if $(shell grep -qs 'topology: *vms' $(EXP_FILE) && echo vms),apt-vms) \
              $(if $(shell grep -qsE 'backend: *bcc|variants:.*original' $(EXP_FILE) && echo bcc),apt-bcc)

.PHONY: setup apt apt-kernel apt-vms apt-bcc apt-test venv test experiment lab-up lab-down lab-status hosts-check clean \
        kernel kernel-test-image test-vms test-unit

setup: apt venv bpf

# $(call apt_install,PACKAGES,WHAT): install those that are missing, say what was done
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "setup: $(2) present"; \
	else echo "setup: installing apt packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	  || { echo "setup: apt-get install failed for:$$missing" >&2; exit 1; }; \
	fi
endef

apt:
	$(call apt_install,$(APT_BASE),apt packages)
apt-kernel:
	$(call apt_install,$(APT_BASE) $(APT_KERNEL),apt packages with the kernel build's)
apt-vms:
	$(call apt_install,$(APT_BASE) $(APT_VMS),apt packages with the VM lab's)
apt-bcc:
	$(call apt_install,$(APT_BASE) $(APT_BCC),apt packages with bcc's)
apt-test:
	$(call apt_install,$(APT_BASE) $(APT_TEST),apt packages with the tests')

# The venv is rebuilt only when pyproject.toml changed since the last install.
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@if [ ! -x $(VPY) ]; then \
	  $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
	    || { echo "setup: need Python 3.11 as $(PYTHON) (set PYTHON=...)" >&2; exit 1; }; \
	  echo "setup: creating $(VENV)"; $(PYTHON) -m venv $(VENV); \
	fi
	@echo "setup: installing vnettracer and its dependencies into $(VENV)"
	@set -o pipefail; $(VPY) -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	@touch $@

test: setup apt-test
	$(VPY) -m pytest $(PYTEST_ARGS)

experiment: setup $(EXP_APT)
	$(VENV)/bin/vnettracer experiment run $(NAME)

lab-up: setup
	$(VENV)/bin/vnettracer lab up --topology $(TOPOLOGY)

lab-down: setup
	$(VENV)/bin/vnettracer lab down

lab-status: setup
	$(VENV)/bin/vnettracer lab status

hosts-check: setup
	$(VENV)/bin/vnettracer hosts check

clean:
	rm -rf $(VENV) build *.egg-info

# The patched kernel (kernel-build/build.sh; docs/cluster.md): out of the source tree under build/kernel,
# reused while patches, config fragments and the build script are unchanged.
kernel-test-image: apt-kernel
	kernel-build/build.sh image

kernel: apt-kernel
	kernel-build/build.sh deb $(KERNEL_CONFIG)

# Only the tests of pure logic (tests/unit/: no root, no lab, a few minutes).
test-unit: setup apt-test
	$(VPY) -m pytest tests/unit $(PYTEST_ARGS)

# Only the real-host path on the VM lab (part of `make test` too): patched kernel packages (vm
# config), debootstrap root, Debian VMs under QEMU, experiments/vm-cluster.yml and an inventory run.
test-vms: setup apt-vms
	$(VPY) -m pytest -m vms -s tests/lab/test_vm_cluster.py

# BPF objects: compiled on the controller against the vmlinux.h kept in bpf/ (CO-RE), shipped to
# hosts, which need no compiler or kernel headers.
BPF_OBJS   := build/bpf/trace.bpf.o build/bpf/trace-compat.bpf.o build/bpf/tag.bpf.o
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_x86 -Ibpf -Wall -Werror

.PHONY: bpf vmlinux
bpf: $(BPF_OBJS)

BPF_HDRS   := bpf/vnettracer.h bpf/vmlinux.h $(wildcard bpf/*.bpf.h)

build/bpf/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS)
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) -c $< -o $@

# The same tracer for kernels before 6.2 (no bpf_cast_to_kern_ctx): the agent falls back to it.
build/bpf/trace-compat.bpf.o: bpf/trace.bpf.c $(BPF_HDRS)
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) -DVNT_COMPAT -c $< -o $@

# Regenerate bpf/vmlinux.h from the running kernel's BTF (only needed for new kernel types).
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h

# Benchmarks (not tests): each prints its own table; see docs/benchmarks.md.
.PHONY: bench
bench: setup
	$(VPY) bench/drain.py
	$(VPY) bench/overhead.py
	$(VPY) bench/hookcost.py
	$(VPY) bench/hosts.py --quickstart 3
	$(VPY) bench/hosts.py --hosts 16
	$(VPY) bench/analysis.py
	$(VPY) bench/ingest.py
