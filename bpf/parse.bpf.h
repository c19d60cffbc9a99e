// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The packet parser: Ethernet, up to two VLAN tags, IPv4/IPv6, TCP (our tag option) and UDP (the
 * patched kernel's id trailer), and the inner packet of VXLAN. Reads the loader's configuration
 * (const volatile struct vnt_config vnt_cfg: VXLAN ports, UDP trace port), which the including
 * program defines before it includes this. Fills struct pkt (identity.bpf.h). */
#ifndef VNT_PARSE_BPF_H
#define VNT_PARSE_BPF_H

#include "identity.bpf.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define VXLAN_HLEN 8

#ifndef VNT_BCC
/* One step of the TCP option scan over opt[0, n): sets result (1 found: id, 0 absent, -1 malformed)
 * and stops, or moves i to the next option. */
struct tag_scan {
	__u8 opt[64]; /* all initialised: the verifier allows variable-offset reads only then */
	__u32 n, i, id;
	int result;
};

#define OPT(x) s->opt[(x) & 0x3f] /* i < 40 is checked; the mask is what the verifier can see */
static __always_inline int tag_step(struct tag_scan *s)
{
	__u32 i = s->i, n = s->n;
	if (i >= n || i >= 40)
		return 1;
	__u8 kind = OPT(i);
	if (kind == 0) /* end of options */
		return 1;
	if (kind == 1) { /* NOP */
		s->i = i + 1;
		return 0;
	}
	if (i + 1 >= n) {
		s->result = -1;
		return 1;
	}
	__u8 len = OPT(i + 1);
	if (len < 2 || i + len > n) {
		s->result = -1;
		return 1;
	}
	if (kind == VNT_TCPOPT_KIND && len == VNT_TCPOPT_LEN && ((OPT(i + 2) << 8) | OPT(i + 3)) == VNT_TCPOPT_EXID) {
		s->id = ((__u32)OPT(i + 4) << 24) | ((__u32)OPT(i + 5) << 16) | ((__u32)OPT(i + 6) << 8) | OPT(i + 7);
		s->result = 1;
		return 1;
	}
	s->i = i + len;
	return 0;
}
#undef OPT

/* bpf_loop's callback: the verifier checks one step once, where an unrolled or bounded 40-step
 * loop made it walk about 390,000 instructions per program (a second of kernel time per load). */
static long tag_step_cb(__u64 k, void *ctx)
{
	return tag_step(ctx);
}

/* Scan the TCP options at [off, off + n) of the packet for our tag: 1 found (id in *id), 0 absent,
 * -1 malformed. A global function: the verifier checks it once, not at every inlined call site. */
VNT_SUBPROG int vnt_find_tag(struct __sk_buff *skb, __u32 off, __u32 n, __u32 *id)
{
	struct tag_scan s = {};
	if (!id || n > 40)
		return -1;
	if (n == 0)
		return 0;
	asm volatile("" : "+r"(n)); /* keep the arithmetic below: it is what the verifier sees */
	/* n in 1..40 stays n; the verifier sees 1..64 (6.1's cannot learn n != 0 from a branch and
	 * refuses a length that may be zero) */
	n = ((n - 1) & 0x3f) + 1;
	if (bpf_skb_load_bytes(skb, off, s.opt, n))
		return -1;
	s.n = n;
	bpf_loop(40, tag_step_cb, &s, 0);
	if (s.result == 1)
		*id = s.id;
	return s.result;
}

#else
/* bcc: the same scan as one bounded loop, inlined (bcc loads one function per program and has no
 * bpf_loop callbacks). Kept as it is on purpose: the step function above inlined 40 times, or even
 * the prologue shared through an inline helper, put bcc's build past the verifier's limit (E2BIG;
 * tests/lab/test_bpf_parse.py loads it). */
VNT_SUBPROG int vnt_find_tag(struct __sk_buff *skb, __u32 off, __u32 n, __u32 *id)
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

#endif

#ifndef VNT_BCC
/* Our tag option at t, read in place: 1 (id and identity set in p) or 0 (not there). */
static __always_inline int tag_at(__u8 *t, void *end, struct pkt *p)
{
	if ((void *)(t + VNT_TCPOPT_LEN) > end || t[0] != VNT_TCPOPT_KIND || t[1] != VNT_TCPOPT_LEN ||
	    ((t[2] << 8) | t[3]) != VNT_TCPOPT_EXID)
		return 0;
	p->tag = ((__u32)t[4] << 24) | ((__u32)t[5] << 16) | ((__u32)t[6] << 8) | t[7];
	p->flags = (p->flags & ~VNT_F_IDENTITY) | VNT_ID_TAG;
	return 1;
}

/* TCP options laid out as usual, read in place (1), or 0: scan them. Usual: none; Linux's NOP, NOP,
 * timestamps (12 bytes); then our tag where bpf/tag.bpf.c and the patched kernel put it (after
 * the timestamps, or alone without them). */
static __always_inline int options_in_place(__u8 *o, __u32 optlen, void *end, struct pkt *p)
{
	int ts = optlen >= 12 && (void *)(o + 4) <= end && o[0] == 1 && o[1] == 1 && o[2] == 8 && o[3] == 10;
	if (optlen == 0 || (ts && optlen == 12))
		return 1;
	if (ts && optlen == 12 + VNT_TCPOPT_LEN)
		return tag_at(o + 12, end, p);
	return optlen == VNT_TCPOPT_LEN && tag_at(o, end, p);
}
#endif

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
	/* the group bit (broadcast, IPv4/IPv6 multicast, neighbour discovery) without a branch: one
	 * more branch put bcc's build past the verifier's limit */
	*flags |= (eth->h_dest[0] & 1) * VNT_F_GROUP;
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
		__u8 *o = (__u8 *)(th + 1);
#ifndef VNT_BCC
		if (!options_in_place(o, doff - sizeof(*th), end, p)) {
#else /* bcc: only Linux's usual options are read in place (more branches: past its verifier's limit) */
		int usual = doff == sizeof(*th) + 12 && (void *)(o + 4) <= end && o[0] == 1 && o[1] == 1 && o[2] == 8 &&
			    o[3] == 10;
		if (doff > sizeof(*th) && !usual) {
#endif
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
		__u32 off = (long)(uh + 1) - (long)skb->data;
		asm volatile("" : "+r"(off)); /* an offset, not a packet pointer plus a length */
		/* the first payload bytes in one load (also from paged data); zeros past the payload */
		__u32 n = p->payload_len < VNT_PAYLOAD_BYTES ? p->payload_len : VNT_PAYLOAD_BYTES;
		if (n) {
			asm volatile("" : "+r"(n));
			n = ((n - 1) & (VNT_PAYLOAD_BYTES - 1)) + 1; /* 1..16, as the verifier can see */
			bpf_skb_load_bytes(skb, off, p->payload, n);
		}
		/* the patched kernel's trailer: the last 4 payload bytes of datagrams to the trace port */
		if (vnt_cfg.udp_trace_port && p->dport == vnt_cfg.udp_trace_port && p->payload_len >= 4) {
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
	__u8 flags = (p->flags | VNT_F_ENCAP) & ~VNT_F_GROUP; /* the outer frame's addressing is not the packet's */
	__builtin_memset(p, 0, sizeof(*p));
	p->flags = flags;
	cur = inner;
	r = parse_l2(&cur, end, &eth_proto, &p->flags);
	if (r)
		return r;
	return parse_l3(skb, cur, end, eth_proto, p, 0); /* ARP inside VXLAN is PARSE_NOT_IP too */
}

#endif /* VNT_PARSE_BPF_H */
