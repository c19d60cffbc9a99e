// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* vnettracer tc probe: one object per agent, its ingress/egress programs attached (clsact,
 * direct action) to every hook; which tracepoint a hook is comes from the vnt_hooks map.
 * Parses Ethernet, VLAN (up to 2 tags), IPv4/IPv6, UDP/VXLAN (inner packet followed), TCP and UDP;
 * keeps only the experiment's flows; gives each packet an identity that is the same at every hook;
 * emits one struct vnt_event per kept packet into a ring buffer shared by all hooks, without a
 * wakeup per event. Never changes or drops a packet: always returns TC_ACT_UNSPEC. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "vnettracer.h"

#define TC_ACT_UNSPEC (-1)
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define VXLAN_HLEN 8

/* Filled in by the loader before load. */
const volatile struct vnt_config vnt_cfg = {
	.vxlan_ports = {8472, 4789, 0, 0},
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, VNT_MAX_TRACEPOINTS);
	__type(key, struct vnt_hook_key);
	__type(value, struct vnt_hook);
} vnt_hooks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);
} vnt_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VNT_MAX_TRACEPOINTS);
	__type(key, __u32);
	__type(value, struct vnt_counters);
} vnt_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VNT_MAX_FLOWS);
	__type(key, __u32);
	__type(value, struct vnt_flow);
} vnt_flows SEC(".maps");

/* Anchor the shared types in the object's BTF so tests can compare them with the Python decoder. */
struct vnt_event *vnt_btf_event __attribute__((unused));
enum vnt_counter *vnt_btf_counter __attribute__((unused));
struct vnt_config *vnt_btf_config __attribute__((unused));

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

/* Scan the TCP options at [off, off + n) of the packet for our tag: 1 found (id in *id), 0 absent,
 * -1 malformed. A global function: the verifier checks it once, not at every inlined call site. */
__attribute__((noinline)) int vnt_find_tag(struct __sk_buff *skb, __u32 off, __u32 n, __u32 *id)
{
	__u8 opt[64] = {}; /* all initialised: the verifier allows variable-offset reads only then */
	if (!id || n > 40)
		return -1;
	if (n == 0)
		return 0;
	asm volatile("" : "+r"(n)); /* keep the arithmetic below: it is what the verifier sees */
	/* n in 1..40 stays n; the verifier sees 1..64 (6.1's cannot learn n != 0 from a branch and
	 * refuses a length that may be zero) */
	n = ((n - 1) & 0x3f) + 1;
	if (bpf_skb_load_bytes(skb, off, opt, n))
		return -1;
#define OPT(x) opt[(x) & 0x3f] /* i < 40 is checked; the mask is what the verifier can see */
	__u64 i = 0;
	for (int k = 0; k < 40; k++) {
		if (i >= n || i >= 40)
			return 0;
		__u8 kind = OPT(i);
		if (kind == 0) /* end of options */
			return 0;
		if (kind == 1) { /* NOP */
			i++;
			continue;
		}
		if (i + 1 >= n)
			return -1;
		__u8 len = OPT(i + 1);
		if (len < 2 || i + len > n)
			return -1;
		if (kind == VNT_TCPOPT_KIND && len == VNT_TCPOPT_LEN && ((OPT(i + 2) << 8) | OPT(i + 3)) == VNT_TCPOPT_EXID) {
			*id = ((__u32)OPT(i + 4) << 24) | ((__u32)OPT(i + 5) << 16) | ((__u32)OPT(i + 6) << 8) | OPT(i + 7);
			return 1;
		}
		i += len;
	}
#undef OPT
	return 0;
}

static __always_inline int is_vxlan_port(__u16 port)
{
	for (int i = 0; i < VNT_MAX_VXLAN_PORTS; i++)
		if (vnt_cfg.vxlan_ports[i] && vnt_cfg.vxlan_ports[i] == port)
			return 1;
	return 0;
}

enum { PARSE_OK = 0, PARSE_FAIL = -1, PARSE_NOT_IP = -2 };

/* Ethernet + up to two VLAN tags; returns the EtherType, cursor after the L2 header. */
static __always_inline int parse_l2(void **cur, void *end, __u16 *proto, __u8 *flags)
{
	struct ethhdr *eth = *cur;
	if ((void *)(eth + 1) > end)
		return PARSE_FAIL;
	*proto = eth->h_proto;
	*cur = eth + 1;
	for (int i = 0; i < 2; i++) {
		if (*proto != bpf_htons(ETH_P_8021Q) && *proto != bpf_htons(ETH_P_8021AD))
			break;
		struct vlan_hdr *vh = *cur;
		if ((void *)(vh + 1) > end)
			return PARSE_FAIL;
		*proto = vh->h_vlan_encapsulated_proto;
		*cur = vh + 1;
		*flags |= VNT_F_VLAN;
	}
	return PARSE_OK;
}

/* IP + L4 at *cur. Sets *vxlan_inner when this is VXLAN to be followed (outer packet). */
static __always_inline int parse_l3(struct __sk_buff *skb, void *cur, void *end, __u16 eth_proto, struct pkt *p,
				    void **vxlan_inner)
{
	__u32 l4_len;
	void *l4;
	if (eth_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;
		if ((void *)(ip + 1) > end)
			return PARSE_FAIL;
		__u32 ihl = ip->ihl * 4;
		__u32 tot = bpf_ntohs(ip->tot_len);
		if (ip->version != 4 || ihl < sizeof(*ip) || tot < ihl)
			return PARSE_FAIL;
		p->saddr[0] = ip->saddr;
		p->daddr[0] = ip->daddr;
		p->proto = ip->protocol;
		p->ip_id = bpf_ntohs(ip->id);
		p->flags &= ~VNT_F_IPV6;
		l4 = cur + ihl;
		l4_len = tot - ihl;
		if (ip->frag_off & bpf_htons(0x1fff)) { /* later fragment: no L4 header */
			p->payload_len = l4_len;
			return PARSE_OK;
		}
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;
		if ((void *)(ip6 + 1) > end)
			return PARSE_FAIL;
		if (ip6->version != 6)
			return PARSE_FAIL;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		p->proto = ip6->nexthdr; /* extension headers are not followed */
		p->flags |= VNT_F_IPV6;
		l4 = ip6 + 1;
		l4_len = bpf_ntohs(ip6->payload_len);
	} else {
		return PARSE_NOT_IP;
	}

	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end)
			return PARSE_FAIL;
		__u32 doff = th->doff * 4;
		if (doff < sizeof(*th) || doff > l4_len)
			return PARSE_FAIL;
		p->sport = bpf_ntohs(th->source);
		p->dport = bpf_ntohs(th->dest);
		p->seq = bpf_ntohl(th->seq);
		p->ack = bpf_ntohl(th->ack_seq);
		p->payload_len = l4_len - doff;
		/* Linux's usual options (NOP, NOP, timestamps: 12 bytes) cannot hold a tag: skip the scan */
		__u8 *o = (__u8 *)(th + 1);
		int usual = doff == sizeof(*th) + 12 && (void *)(o + 4) <= end && o[0] == 1 && o[1] == 1 && o[2] == 8 &&
			    o[3] == 10;
		if (doff > sizeof(*th) && !usual) {
			__u32 off = (void *)(th + 1) - (void *)(long)skb->data;
			int r = vnt_find_tag(skb, off, doff - sizeof(*th), &p->tag);
			if (r < 0)
				return PARSE_FAIL;
			if (r > 0)
				p->flags = (p->flags & ~VNT_F_IDENTITY) | VNT_ID_TAG;
		}
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > end)
			return PARSE_FAIL;
		__u32 ulen = bpf_ntohs(uh->len);
		if (ulen < sizeof(*uh) || ulen > l4_len)
			return PARSE_FAIL;
		p->sport = bpf_ntohs(uh->source);
		p->dport = bpf_ntohs(uh->dest);
		p->payload_len = ulen - sizeof(*uh);
		if (vxlan_inner && !(p->flags & VNT_F_ENCAP) && is_vxlan_port(p->dport)) {
			*vxlan_inner = (void *)(uh + 1) + VXLAN_HLEN;
			return PARSE_OK;
		}
		__u8 *pl = (__u8 *)(uh + 1);
		for (int i = 0; i < VNT_PAYLOAD_BYTES; i++) {
			if (i >= p->payload_len || (void *)(pl + i + 1) > end)
				break;
			p->payload[i] = pl[i];
		}
		/* the patched kernel's trailer: the last 4 payload bytes of datagrams to the trace port */
		if (vnt_cfg.udp_trace_port && p->dport == vnt_cfg.udp_trace_port && p->payload_len >= 4) {
			__u32 off = (long)pl - (long)skb->data;
			asm volatile("" : "+r"(off)); /* an offset, not a packet pointer plus a length */
			off += p->payload_len - 4;
			__u32 id;
			if (!bpf_skb_load_bytes(skb, off, &id, sizeof(id))) {
				p->tag = bpf_ntohl(id);
				p->flags = (p->flags & ~VNT_F_IDENTITY) | VNT_ID_TAG;
			}
		}
	} else {
		p->payload_len = l4_len;
	}
	return PARSE_OK;
}

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *cur = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	void *inner = 0;
	__u16 eth_proto;

	int r = parse_l2(&cur, end, &eth_proto, &p->flags);
	if (r)
		return r;
	r = parse_l3(skb, cur, end, eth_proto, p, &inner);
	if (r || !inner)
		return r;
	/* VXLAN: the identity and the flow are the inner packet's */
	__u8 flags = p->flags | VNT_F_ENCAP;
	__builtin_memset(p, 0, sizeof(*p));
	p->flags = flags;
	cur = inner;
	r = parse_l2(&cur, end, &eth_proto, &p->flags);
	if (r)
		return r;
	return parse_l3(skb, cur, end, eth_proto, p, 0); /* ARP inside VXLAN is PARSE_NOT_IP too */
}

static __always_inline int flow_match(const struct vnt_flow *f, __u32 s, __u32 d, __u16 sp, __u16 dp, __u8 proto)
{
	return (!f->proto || f->proto == proto) && (s & f->smask) == f->saddr && (d & f->dmask) == f->daddr &&
	       (!f->sport || f->sport == sp) && (!f->dport || f->dport == dp);
}

static __always_inline int flow_wanted(const struct pkt *p)
{
	__u8 n = vnt_cfg.nflows;
	if (!n)
		return 1;
	if (p->flags & VNT_F_IPV6)
		return 0;
	/* unrolled: no back-edge for the verifier to follow (as a loop, 6.1's saw an infinite one) */
#pragma unroll
	for (__u32 i = 0; i < VNT_MAX_FLOWS; i++) {
		if (i >= n)
			break;
		__u32 key = i;
		struct vnt_flow *f = bpf_map_lookup_elem(&vnt_flows, &key);
		if (!f)
			break;
		if (flow_match(f, p->saddr[0], p->daddr[0], p->sport, p->dport, p->proto))
			return 1;
		if (f->both_directions && flow_match(f, p->daddr[0], p->saddr[0], p->dport, p->sport, p->proto))
			return 1;
	}
	return 0;
}

/* The namespace of the device the hook is on. bpf_get_netns_cookie(skb) would take it from
 * skb->sk, which a forwarded packet does not have (it then reports init_net). */
#ifndef VNT_COMPAT
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

static __always_inline __u64 dev_netns_cookie(struct __sk_buff *skb)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	struct net_device *dev = kskb->dev;
	if (!dev)
		return 0;
	return dev->nd_net.net->net_cookie;
}
#else
/* trace-compat.bpf.o, for kernels before 6.2 (no bpf_cast_to_kern_ctx, e.g. Debian 12's 6.1): in a
 * tc program the context is the kernel's sk_buff, so the same fields come through CO-RE probe
 * reads (the loader needs CAP_PERFMON, which the agent as root has). */
static __always_inline __u64 dev_netns_cookie(struct __sk_buff *skb)
{
	struct sk_buff *kskb = (struct sk_buff *)skb;
	struct net_device *dev = BPF_CORE_READ(kskb, dev);
	if (!dev)
		return 0;
	return BPF_CORE_READ(dev, nd_net.net, net_cookie);
}
#endif

static __always_inline int handle(struct __sk_buff *skb, __u32 egress)
{
	struct vnt_hook_key hk = {.netns_cookie = dev_netns_cookie(skb), .ifindex = skb->ifindex, .egress = egress};
	struct vnt_hook *hook = bpf_map_lookup_elem(&vnt_hooks, &hk);
	if (!hook)
		return TC_ACT_UNSPEC;
	__u32 key = hook->tracepoint;
	struct vnt_counters *cnt = bpf_map_lookup_elem(&vnt_counters, &key);
	if (!cnt)
		return TC_ACT_UNSPEC;
	cnt->c[VNT_C_SEEN]++;

	struct pkt p = {};
	int r = parse(skb, &p);
	if (r == PARSE_NOT_IP) {
		cnt->c[VNT_C_NOT_IP]++;
		return TC_ACT_UNSPEC;
	}
	if (r) {
		cnt->c[VNT_C_PARSE_FAIL]++;
		return TC_ACT_UNSPEC;
	}
	if (!flow_wanted(&p)) {
		cnt->c[VNT_C_FILTERED]++;
		return TC_ACT_UNSPEC;
	}

	__u8 kind = p.flags & VNT_F_IDENTITY;
	__u64 packet_id;
	if (kind == VNT_ID_TAG) {
		packet_id = p.tag;
	} else if (p.proto == IPPROTO_UDP) {
		kind = VNT_ID_PAYLOAD;
		packet_id = payload_hash(&p);
	} else {
		kind = VNT_ID_HASH;
		packet_id = packet_hash(&p);
	}
	__u64 fh = flow_hash(&p);
	__u32 n = hook->sample_n;
	if (n > 1 && ((packet_id ^ fh) * 0x9E3779B97F4A7C15ULL >> 32) % n) {
		cnt->c[VNT_C_SAMPLED_OUT]++;
		return TC_ACT_UNSPEC;
	}
	/* written in place in the ring (no copy from the stack), made visible without a wakeup */
	struct vnt_event *ev = bpf_ringbuf_reserve(&vnt_events, sizeof(*ev), 0);
	if (!ev) {
		cnt->c[VNT_C_DROPPED]++;
		return TC_ACT_UNSPEC;
	}
	ev->ts_ns = bpf_ktime_get_ns();
	ev->packet_id = packet_id;
	ev->flow_hash = fh;
	ev->len = skb->len;
	ev->tracepoint = key;
	ev->flags = (p.flags & ~VNT_F_IDENTITY) | kind | (egress ? VNT_F_EGRESS : 0);
	ev->l4proto = p.proto;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	cnt->c[VNT_C_EMITTED]++;
	return TC_ACT_UNSPEC;
}

SEC("tc")
int vnt_ingress(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

SEC("tc")
int vnt_egress(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
