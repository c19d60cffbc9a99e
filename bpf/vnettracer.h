/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* vnettracer: the one definition of what BPF programs and user space share.
 * The Python decoder (vnettracer/agent/record.py) mirrors these layouts; a test compares them
 * against this header as compiled into the BPF objects (BTF), so they cannot drift apart. */
#ifndef VNETTRACER_H
#define VNETTRACER_H

/* The packet tag: TCP option kind 253 (RFC 6994 experimental) with a 16-bit ExID, then a 32-bit
 * packet id in network byte order; 8 bytes in all. Written by bpf/tag.bpf.c or a patched kernel. */
#define VNT_TCPOPT_KIND 253
#define VNT_TCPOPT_LEN 8
#define VNT_TCPOPT_EXID 0x564e /* "VN" */

/* Counters of the tagging program (bpf/tag.bpf.c), per CPU. */
enum vnt_tag_counter {
	VNT_TAG_C_SOCKETS = 0,      /* connections set up for tagging */
	VNT_TAG_C_TAGGED = 1,       /* segments (GSO packets) that got the option */
	VNT_TAG_C_NO_ROOM = 2,      /* option space full (SACK blocks): untagged */
	VNT_TAG_C_STORE_FAILED = 3, /* the kernel refused the write */
	VNT_TAG_C_MAX = 4,
};

#define VNT_MAX_TRACEPOINTS 256 /* tracepoint ids are 1..255, assigned by the experiment spec */
#define VNT_MAX_FLOWS 16
#define VNT_MAX_VXLAN_PORTS 4
#define VNT_PAYLOAD_BYTES 16 /* UDP identity: this many payload bytes are hashed */

/* How the packet id of an event was made (flags & VNT_F_IDENTITY). */
enum vnt_identity {
	VNT_ID_NONE = 0,
	VNT_ID_TAG = 1,     /* an id the packet carries: the TCP option above, or for UDP the patched
			     * kernel's 4-byte trailer (net.ipv4.udp_trace_port); packet_id = the id */
	VNT_ID_HASH = 2,    /* hash of invariant inner header fields */
	VNT_ID_PAYLOAD = 3, /* UDP: hash of 5-tuple, IP id, length and first payload bytes */
};

#define VNT_F_IDENTITY 0x03
#define VNT_F_ENCAP 0x04  /* seen inside VXLAN (fields are the inner packet's) */
#define VNT_F_EGRESS 0x08 /* hook direction: egress (else ingress) */
#define VNT_F_IPV6 0x10
#define VNT_F_VLAN 0x20
#define VNT_F_GROUP 0x40 /* sent to a group address (multicast or broadcast MAC): it ends where its link ends */

/* One event: a packet seen at a tracepoint. 32 bytes, no padding holes. */
struct vnt_event {
	__u64 ts_ns;     /* bpf_ktime_get_ns(): CLOCK_MONOTONIC of the host */
	__u64 packet_id; /* per identity kind, see enum vnt_identity */
	__u64 flow_hash; /* hash of the inner 5-tuple (direction-sensitive) */
	__u32 len;       /* skb->len at the hook (outer length when encapsulated) */
	__u16 tracepoint;
	__u8 flags;
	__u8 l4proto; /* inner IP protocol (6 TCP, 17 UDP, ...) */
};

/* Events staged on one CPU before they reach the ring as one record of n events (libbpf builds). */
#define VNT_STAGE_EVENTS 32         /* a power of two */
#define VNT_STAGE_NS 50000000ULL    /* a batch older than this is written at the next event */
struct vnt_stage {
	__u32 n;        /* events staged */
	__u32 busy;     /* a program on this CPU is using the stage */
	__u64 first_ns; /* ts_ns of the first staged event */
	struct vnt_event ev[VNT_STAGE_EVENTS];
};

/* Per tracepoint, per CPU counters (array index = tracepoint id). */
enum vnt_counter {
	VNT_C_SEEN = 0,    /* every packet the hook ran on */
	VNT_C_EMITTED,     /* events written to the ring buffer */
	VNT_C_FILTERED,    /* not one of the experiment's flows */
	VNT_C_SAMPLED_OUT, /* dropped by coherent 1-in-N sampling */
	VNT_C_DROPPED,     /* ring buffer full: event lost */
	VNT_C_PARSE_FAIL,  /* truncated or bogus headers */
	VNT_C_NOT_IP,      /* ARP and other non-IP frames: not traced, not an error */
	VNT_C_MAX = 8,
};

struct vnt_counters {
	__u64 c[VNT_C_MAX];
};

/* One flow the experiment names; addresses/masks in network order, ports in host order, 0 = any. */
struct vnt_flow {
	__u32 saddr;
	__u32 smask;
	__u32 daddr;
	__u32 dmask;
	__u16 sport;
	__u16 dport;
	__u8 proto; /* 0 = any */
	__u8 both_directions;
	__u8 pad[2];
};

/* A hook (one device, one direction, in one network namespace) and what it is. The agent fills
 * the hooks map; a packet at a hook that is not in the map is ignored. */
struct vnt_hook_key {
	__u64 netns_cookie; /* SO_NETNS_COOKIE of the device's namespace */
	__u32 ifindex;
	__u32 egress; /* 0 ingress, 1 egress */
};

struct vnt_hook {
	__u16 tracepoint;
	__u16 pad;
	__u32 sample_n; /* keep 1 in N packets, chosen by packet id (the same packets at every hook); 0/1 = all */
};

/* The hooks map's entries again in a direct-mapped array, at slot vnt_hook_slot(key): an array
 * lookup is inlined by the verifier, a hash lookup is a call that hashes the key. The hash map
 * holds every hook; a hook whose slot another holds is found there (the slot's key differs). */
#define VNT_HOOK_SLOTS 1024 /* a power of two */
struct vnt_hook_slot {
	struct vnt_hook_key key;
	struct vnt_hook hook; /* tracepoint 0: the slot is empty */
};

static inline __u32 vnt_hook_slot(__u64 netns_cookie, __u32 ifindex, __u32 egress)
{
	return ((__u32)((netns_cookie * 0x9E3779B97F4A7C15ULL) >> 40) ^ (ifindex << 1 | egress)) & (VNT_HOOK_SLOTS - 1);
}

/* Settings for the whole agent, a `const volatile` global filled in by the loader before load. */
struct vnt_config {
	__u16 vxlan_ports[VNT_MAX_VXLAN_PORTS]; /* host order; 0 = unused slot */
	__u8 nflows;                            /* entries of the flows map in use; 0 = keep everything */
	__u8 pad;
	__u16 udp_trace_port; /* host order; UDP to this port carries the patched kernel's id trailer; 0 = off */
};

#endif /* VNETTRACER_H */
