# vnettracer: the two commands a user needs are `make experiment NAME=quickstart` and `make test`.
# Both run `setup` first, which installs only what is missing and says what it did.

SHELL      := /bin/bash
PYTHON     ?= python3
VENV       ?= .venv
VPY        := $(VENV)/bin/python
NAME       ?= quickstart
TOPOLOGY   ?= flannel-vxlan
PYTEST_ARGS ?=

# Debian packages the controller and the embedded lab hosts need (the lab hosts share this root fs).
APT_PACKAGES := openssh-server openssh-client iproute2 tcpdump python3 python3-apt python3-venv \
                clang llvm libbpf-dev libbpf1 bpftool \
                socat iperf3 sockperf redis-server redis-tools procps psmisc chromium ethtool influxdb \
                linux-source-6.1 bc flex bison libelf-dev libssl-dev cpio xz-utils patch gcc libc6-dev \
                qemu-system-x86 qemu-utils busybox-static linux-config-6.1 dpkg-dev rsync kmod dwarves debootstrap e2fsprogs

.PHONY: setup apt venv test experiment lab-up lab-down lab-status hosts-check clean kernel kernel-test-image \
        test-vms

setup: apt venv bpf

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "setup: apt packages present"; \
	else echo "setup: installing apt packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	  || { echo "setup: apt-get install failed for:$$missing" >&2; exit 1; }; \
	fi

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

test: setup
	$(VPY) -m pytest $(PYTEST_ARGS)

experiment: setup
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

# The patched kernel (kernel-build/, docs/kernel.md): out of the source tree under build/kernel,
# reused while patches, config fragments and the build script are unchanged.
kernel-test-image: apt
	kernel-build/build.sh image

kernel: apt
	kernel-build/build.sh deb $(KERNEL_CONFIG)

# Only the real-host path on the VM lab (part of `make test` too): patched kernel packages (vm
# config), debootstrap root, Debian VMs under QEMU, experiments/vm-cluster.yml and an inventory run.
test-vms: setup
	$(VPY) -m pytest -m vms -s tests/test_vm_cluster.py

# BPF objects: compiled on the controller against the vmlinux.h kept in bpf/ (CO-RE), shipped to
# hosts, which need no compiler or kernel headers.
BPF_OBJS   := build/bpf/trace.bpf.o build/bpf/trace-compat.bpf.o build/bpf/tag.bpf.o
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_x86 -Ibpf -Wall -Werror

.PHONY: bpf vmlinux
bpf: $(BPF_OBJS)

build/bpf/%.bpf.o: bpf/%.bpf.c bpf/vnettracer.h bpf/vmlinux.h
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) -c $< -o $@

# The same tracer for kernels before 6.2 (no bpf_cast_to_kern_ctx): the agent falls back to it.
build/bpf/trace-compat.bpf.o: bpf/trace.bpf.c bpf/vnettracer.h bpf/vmlinux.h
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
	$(VPY) bench/analysis.py
	$(VPY) bench/ingest.py
