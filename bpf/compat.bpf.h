// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* One tracer source, two toolchains: clang + libbpf (CO-RE objects, build/bpf/, the default)
 * and bcc (compiled on the host at load time against its kernel headers: `tracer: {backend: bcc}`,
 * vnettracer/agent/bcc.py). Maps are declared through the macros below and used through one
 * accessor per map (bcc rewrites map method calls and refuses them inside macros); everything
 * else is the same C. */
#ifndef VNT_COMPAT_BPF_H
#define VNT_COMPAT_BPF_H

#ifdef VNT_BCC
/* bcc includes <uapi/linux/bpf.h> and its helpers itself; the packet headers come from the host's
 * kernel headers (UAPI only: their layouts never change between kernels). */
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

#ifdef VNT_OFFSETS_FROM_HEADERS /* a kernel without BTF: its own headers (they must match it) */
#include <linux/skbuff.h>
#include <linux/netdevice.h>
#include <net/net_namespace.h>
#define VNT_OFF_SKB_DEV offsetof(struct sk_buff, dev)
#define VNT_OFF_DEV_NET offsetof(struct net_device, nd_net)
#define VNT_OFF_NET_COOKIE offsetof(struct net, net_cookie)
#endif

struct vlan_hdr { /* <linux/if_vlan.h> is not UAPI */
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

#ifndef bpf_htons
#define bpf_htons(x) ((__u16)__builtin_bswap16(x))
#define bpf_ntohs(x) ((__u16)__builtin_bswap16(x))
#define bpf_ntohl(x) ((__u32)__builtin_bswap32(x))
#endif

#define VNT_HASH(name, K, V, n) BPF_HASH(name, K, V, n)
#define VNT_ARRAY(name, V, n) BPF_ARRAY(name, V, n)
#define VNT_PERCPU_ARRAY(name, V, n) BPF_PERCPU_ARRAY(name, V, n)
#define VNT_RINGBUF(name, bytes) BPF_RINGBUF_OUTPUT(name, (bytes) / 4096)
/* bcc has no read-only globals: the loader passes the configuration as an initialiser
 * (-DVNT_CONFIG_INIT=...), which clang folds into the code. */
#define VNT_CONFIG static const struct vnt_config
#define VNT_SECTION(s)
#define VNT_SUBPROG static __always_inline

#else /* libbpf */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define VNT_MAP(name, t, K, V, n)                                                                    \
	struct {                                                                                     \
		__uint(type, t);                                                                     \
		__uint(max_entries, n);                                                              \
		__type(key, K);                                                                      \
		__type(value, V);                                                                    \
	} name SEC(".maps")
#define VNT_HASH(name, K, V, n) VNT_MAP(name, BPF_MAP_TYPE_HASH, K, V, n)
#define VNT_ARRAY(name, V, n) VNT_MAP(name, BPF_MAP_TYPE_ARRAY, __u32, V, n)
#define VNT_PERCPU_ARRAY(name, V, n) VNT_MAP(name, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, V, n)
#define VNT_RINGBUF(name, bytes)                                                                     \
	struct {                                                                                     \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                                                  \
		__uint(max_entries, bytes);                                                          \
	} name SEC(".maps")
/* filled in by the loader before load (.rodata) */
#define VNT_CONFIG const volatile struct vnt_config
#define VNT_SECTION(s) SEC(s)
#define VNT_SUBPROG __attribute__((__noinline__))
#endif
#define vnt_barrier() asm volatile("" ::: "memory")

#endif /* VNT_COMPAT_BPF_H */
