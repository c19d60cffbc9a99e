// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* A packet's identity, the same at every hook: the fields parse.bpf.h fills (struct pkt) and the
 * hashes over them. vnettracer/agent/identity.py is the reference implementation of each hash, and
 * tests/lab/test_bpf_parse.py holds the two together. */
#ifndef VNT_IDENTITY_BPF_H
#define VNT_IDENTITY_BPF_H

#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

struct pkt {
	__u32 saddr[4], daddr[4]; /* v4 uses [0] */
	__u16 sport, dport;
	__u32 seq, ack;
	__u32 payload_len;
	__u32 tag;
	__u16 ip_id;
	__u8 proto;
	__u8 flags;
	__u8 payload[VNT_PAYLOAD_BYTES];
};

/* 64-bit mixing (murmur3-style finaliser); vnettracer/agent/identity.py is the reference. */
static __always_inline __u64 mix(__u64 h, __u64 v)
{
	h ^= v * 0x9E3779B97F4A7C15ULL;
	h = (h << 31) | (h >> 33);
	return h * 0xC2B2AE3D27D4EB4FULL;
}

static __always_inline __u64 fin(__u64 h)
{
	h ^= h >> 33;
	h *= 0xFF51AFD7ED558CCDULL;
	h ^= h >> 33;
	h *= 0xC4CEB9FE1A85EC53ULL;
	return h ^ (h >> 33);
}

static __always_inline __u64 hash_addrs(__u64 h, const struct pkt *p)
{
	if (p->flags & VNT_F_IPV6) {
		for (int i = 0; i < 4; i++)
			h = mix(h, p->saddr[i]);
		for (int i = 0; i < 4; i++)
			h = mix(h, p->daddr[i]);
		return h;
	}
	return mix(mix(h, p->saddr[0]), p->daddr[0]);
}

static __always_inline __u64 flow_hash(const struct pkt *p)
{
	__u64 h = hash_addrs(0x766e74666c6f77ULL, p); /* "vntflow" */
	return fin(mix(h, ((__u64)p->proto << 32) | ((__u32)p->sport << 16) | p->dport));
}

static __always_inline __u64 packet_hash(const struct pkt *p)
{
	__u64 h = hash_addrs(0x766e747061636bULL, p); /* "vntpack" */
	h = mix(h, ((__u64)p->proto << 32) | ((__u32)p->sport << 16) | p->dport);
	h = mix(h, ((__u64)p->ip_id << 32) | p->payload_len);
	if (p->proto == IPPROTO_TCP)
		h = mix(h, ((__u64)p->seq << 32) | p->ack);
	return fin(h);
}

static __always_inline __u64 payload_hash(const struct pkt *p)
{
	__u64 h = hash_addrs(0x766e747061796cULL, p); /* "vntpayl" */
	h = mix(h, ((__u64)p->proto << 32) | ((__u32)p->sport << 16) | p->dport);
	h = mix(h, ((__u64)p->ip_id << 32) | p->payload_len);
	__u64 w0 = 0, w1 = 0;
	__builtin_memcpy(&w0, &p->payload[0], 8);
	__builtin_memcpy(&w1, &p->payload[8], 8);
	return fin(mix(mix(h, w0), w1));
}

#endif /* VNT_IDENTITY_BPF_H */
