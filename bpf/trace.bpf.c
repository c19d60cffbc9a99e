// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* vnettracer tc probe: one object per agent, its ingress/egress programs attached (clsact,
 * direct action) to every hook; which tracepoint a hook is comes from the vnt_hooks map.
 * Parses Ethernet, VLAN (up to 2 tags), IPv4/IPv6, UDP/VXLAN (inner packet followed), TCP and UDP;
 * keeps only the experiment's flows; gives each packet an identity that is the same at every hook;
 * emits one struct vnt_event per kept packet into a ring buffer shared by all hooks, without a
 * wakeup per event. Never changes or drops a packet: always returns TC_ACT_UNSPEC. */
#include "compat.bpf.h"
#include "vnettracer.h"

#define TC_ACT_UNSPEC (-1)

#ifndef VNT_CONFIG_INIT
#define VNT_CONFIG_INIT {.vxlan_ports = {8472, 4789, 0, 0}}
#endif
#ifndef VNT_RING_BYTES
#define VNT_RING_BYTES (1 << 24) /* libbpf: the loader sets the size; bcc: -DVNT_RING_BYTES */
#endif

VNT_CONFIG vnt_cfg = VNT_CONFIG_INIT;

VNT_HASH(vnt_hooks, struct vnt_hook_key, struct vnt_hook, VNT_MAX_TRACEPOINTS);
VNT_ARRAY(vnt_hook_slots, struct vnt_hook_slot, VNT_HOOK_SLOTS);
VNT_RINGBUF(vnt_events, VNT_RING_BYTES);
VNT_PERCPU_ARRAY(vnt_counters, struct vnt_counters, VNT_MAX_TRACEPOINTS);
VNT_ARRAY(vnt_flows, struct vnt_flow, VNT_MAX_FLOWS);

/* The maps' accessors, one spelling per toolchain (bpf/compat.bpf.h). */
static __always_inline struct vnt_hook *hook_of(struct vnt_hook_key *k)
{
#ifdef VNT_BCC
	return vnt_hooks.lookup(k);
#else
	return bpf_map_lookup_elem(&vnt_hooks, k);
#endif
}

static __always_inline struct vnt_hook_slot *slot_at(__u32 *i)
{
#ifdef VNT_BCC
	return vnt_hook_slots.lookup(i);
#else
	return bpf_map_lookup_elem(&vnt_hook_slots, i);
#endif
}

static __always_inline struct vnt_counters *counters_of(__u32 *tracepoint)
{
#ifdef VNT_BCC
	return vnt_counters.lookup(tracepoint);
#else
	return bpf_map_lookup_elem(&vnt_counters, tracepoint);
#endif
}

static __always_inline struct vnt_flow *flow_at(__u32 *i)
{
#ifdef VNT_BCC
	return vnt_flows.lookup(i);
#else
	return bpf_map_lookup_elem(&vnt_flows, i);
#endif
}

/* One event: a packet seen at a tracepoint. */
static __always_inline void event_fill(struct vnt_event *ev, __u64 ts, __u64 id, __u64 fh, __u32 len, __u16 tp,
				       __u8 flags, __u8 proto)
{
	ev->ts_ns = ts;
	ev->packet_id = id;
	ev->flow_hash = fh;
	ev->len = len;
	ev->tracepoint = tp;
	ev->flags = flags;
	ev->l4proto = proto;
}

#ifdef VNT_BCC
/* bcc: one ring record per event, written in place and made visible without a wakeup (the agent
 * polls); counted emitted, or dropped when the ring is full. */
static __always_inline void emit(struct vnt_counters *cnt, __u64 id, __u64 fh, __u32 len, __u16 tp, __u8 flags,
				 __u8 proto)
{
	struct vnt_event *ev = vnt_events.ringbuf_reserve(sizeof(struct vnt_event));
	if (!ev) {
		cnt->c[VNT_C_DROPPED]++;
		return;
	}
	event_fill(ev, bpf_ktime_get_ns(), id, fh, len, tp, flags, proto);
	vnt_events.ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	cnt->c[VNT_C_EMITTED]++;
}
#else
/* libbpf: events are staged per CPU and reach the ring as one record per batch (vnettracer.h):
 * a ring reservation per event (a lock the CPUs share, a header, a commit) cost as much as the
 * rest of an emitted packet. */
VNT_PERCPU_ARRAY(vnt_stage, struct vnt_stage, 1);

static __always_inline struct vnt_stage *stage_of_cpu(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&vnt_stage, &zero);
}

/* Staged event i, refused by the full ring: dropped, not emitted (a bpf_loop callback). */
static long drop_one(__u32 i, void *ctx)
{
	struct vnt_stage *s = stage_of_cpu();
	if (!s)
		return 1;
	__u32 tp = s->ev[i & (VNT_STAGE_EVENTS - 1)].tracepoint;
	struct vnt_counters *c = counters_of(&tp);
	if (c) {
		c->c[VNT_C_EMITTED]--;
		c->c[VNT_C_DROPPED]++;
	}
	return 0;
}

/* The staged events to the ring as one record, without a wakeup. If the ring is full they count
 * as dropped, not emitted, at their tracepoints. The caller holds the stage (busy). */
static __always_inline void stage_flush(struct vnt_stage *s)
{
	__u32 n = s->n;
	s->n = 0;
	if (!n || n > VNT_STAGE_EVENTS)
		return;
	if (!bpf_ringbuf_output(&vnt_events, s->ev, n * sizeof(struct vnt_event), BPF_RB_NO_WAKEUP))
		return;
	bpf_loop(n, drop_one, 0, 0);
}

/* Staged at this CPU's next place and counted emitted (a flush that finds the ring full counts it
 * dropped instead); a full batch, or one older than VNT_STAGE_NS, is flushed (the agent flushes
 * quiet CPUs: vnt_flush below). */
static __always_inline void emit(struct vnt_counters *cnt, __u64 id, __u64 fh, __u32 len, __u16 tp, __u8 flags,
				 __u8 proto)
{
	struct vnt_stage *s = stage_of_cpu();
	__u64 now = bpf_ktime_get_ns();
	if (!s || s->busy) {
		/* another program on this CPU holds the stage (it was preempted, PREEMPT_RT): a record
		 * of its own */
		struct vnt_event ev;
		event_fill(&ev, now, id, fh, len, tp, flags, proto);
		cnt->c[bpf_ringbuf_output(&vnt_events, &ev, sizeof(ev), BPF_RB_NO_WAKEUP) ? VNT_C_DROPPED : VNT_C_EMITTED]++;
		return;
	}
	cnt->c[VNT_C_EMITTED]++;
	s->busy = 1;
	vnt_barrier();
	__u32 i = s->n & (VNT_STAGE_EVENTS - 1);
	event_fill(&s->ev[i], now, id, fh, len, tp, flags, proto);
	if (!i)
		s->first_ns = now;
	s->n = i + 1;
	if (i + 1 == VNT_STAGE_EVENTS || now - s->first_ns > VNT_STAGE_NS)
		stage_flush(s);
	vnt_barrier();
	s->busy = 0;
}
#endif

#ifndef VNT_BCC
/* Anchor the shared types in the object's BTF so tests can compare them with the Python decoder. */
struct vnt_event *vnt_btf_event __attribute__((unused));
enum vnt_counter *vnt_btf_counter __attribute__((unused));
struct vnt_config *vnt_btf_config __attribute__((unused));
struct vnt_hook_slot *vnt_btf_hook_slot __attribute__((unused));
struct vnt_stage *vnt_btf_stage __attribute__((unused));
#endif

#include "parse.bpf.h"

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
		struct vnt_flow *f = flow_at(&key);
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
#if defined(VNT_BCC)
/* bcc: no CO-RE; the loader gives the field offsets of the running kernel, read from its BTF or
 * its headers (vnettracer/agent/bcc.py). Probe reads, as in the compat object. */
static __always_inline __u64 dev_netns_cookie(struct __sk_buff *skb)
{
	void *dev = 0, *net = 0;
	__u64 cookie = 0;
	bpf_probe_read_kernel(&dev, sizeof(dev), (void *)skb + VNT_OFF_SKB_DEV);
	if (!dev)
		return 0;
	bpf_probe_read_kernel(&net, sizeof(net), dev + VNT_OFF_DEV_NET);
	if (!net)
		return 0;
	bpf_probe_read_kernel(&cookie, sizeof(cookie), net + VNT_OFF_NET_COOKIE);
	return cookie;
}
#elif !defined(VNT_COMPAT)
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

/* The hook's slot if it holds this hook, else the hooks map (vnettracer.h). bcc: the hooks map
 * only (its build inlines the parser, and two kinds of map value pointer here double what its
 * verifier run explores, past the limit). */
static __always_inline struct vnt_hook *find_hook(struct vnt_hook_key *hk)
{
#ifndef VNT_BCC
	__u32 i = vnt_hook_slot(hk->netns_cookie, hk->ifindex, hk->egress);
	struct vnt_hook_slot *s = slot_at(&i);
	if (s && s->hook.tracepoint && s->key.ifindex == hk->ifindex && s->key.egress == hk->egress &&
	    s->key.netns_cookie == hk->netns_cookie)
		return &s->hook;
#endif
	return hook_of(hk);
}

static __always_inline int handle(struct __sk_buff *skb, __u32 egress)
{
	struct vnt_hook_key hk = {.netns_cookie = dev_netns_cookie(skb), .ifindex = skb->ifindex, .egress = egress};
	struct vnt_hook *hook = find_hook(&hk);
	if (!hook)
		return TC_ACT_UNSPEC;
	__u32 key = hook->tracepoint;
	struct vnt_counters *cnt = counters_of(&key);
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

	/* what sampling hashes: a tag alone, since NAT (a service's DNAT, a published port) changes
	 * the flow hash, not the tag, and every hook must keep the same packets; else id and flow */
	__u64 fh = flow_hash(&p);
	__u8 kind = p.flags & VNT_F_IDENTITY;
	__u64 packet_id, sample_key;
	if (kind == VNT_ID_TAG) {
		packet_id = p.tag;
		sample_key = packet_id;
	} else if (p.proto == IPPROTO_UDP) {
		kind = VNT_ID_PAYLOAD;
		packet_id = payload_hash(&p);
		sample_key = packet_id ^ fh;
	} else {
		kind = VNT_ID_HASH;
		packet_id = packet_hash(&p);
		sample_key = packet_id ^ fh;
	}
	/* 1 in n: a 32-bit hash of the identity scaled to [0, n) by a multiply (a modulo is a
	 * division, 20-40 ns); 0 keeps the packet */
	__u32 n = hook->sample_n;
	__u32 x = sample_key * 0x9E3779B97F4A7C15ULL >> 32;
	if (n > 1 && ((__u64)x * n) >> 32) {
		cnt->c[VNT_C_SAMPLED_OUT]++;
		return TC_ACT_UNSPEC;
	}
	emit(cnt, packet_id, fh, skb->len, key, (p.flags & ~VNT_F_IDENTITY) | kind | (egress ? VNT_F_EGRESS : 0), p.proto);
	return TC_ACT_UNSPEC;
}

#ifndef VNT_BCC
/* Run by the agent on each CPU (BPF_PROG_TEST_RUN with BPF_F_TEST_RUN_ON_CPU, an IPI to that CPU)
 * every read and at the end: the CPU's staged events to the ring. An IPI can land while a tc
 * program on that CPU holds the stage; the stage is then left to it. */
SEC("raw_tp")
int vnt_flush(void *ctx)
{
	struct vnt_stage *s = stage_of_cpu();
	if (!s || s->busy)
		return 1;
	s->busy = 1;
	vnt_barrier();
	stage_flush(s);
	vnt_barrier();
	s->busy = 0;
	return 0;
}
#endif

VNT_SECTION("tc")
int vnt_ingress(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

VNT_SECTION("tc")
int vnt_egress(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

#ifndef VNT_BCC
char LICENSE[] SEC("license") = "Dual BSD/GPL";
#endif
