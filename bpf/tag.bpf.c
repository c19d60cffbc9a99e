// SPDX-License-Identifier: GPL-2.0
/* Packet tags without a kernel patch (kernels >= 5.10): a sockops program, attached to a cgroup v2,
 * that writes vnettracer's TCP option (vnettracer.h: kind 253, ExID 0x564e, 32-bit id) on every
 * data segment of the TCP sockets of the processes in that cgroup.
 *
 * - The id lives in sk_storage: random start per socket, +1 per tagged segment (per GSO packet:
 *   the option is written once per GSO packet and copied to its wire segments, unless the sender's
 *   device has gso_max_segs 1).
 * - The length callback also runs without a packet when TCP sizes its MSS: reserving there makes
 *   the MSS leave room for the option (1448 -> 1440 with timestamps).
 * - No room left (SACK blocks with timestamps): the segment goes untagged and is counted.
 * - Only connections established after the program is attached are tagged.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "vnettracer.h"

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} vnt_tag_ids SEC(".maps");

/* enum vnt_tag_counter; per-CPU */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VNT_TAG_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} vnt_tag_counters SEC(".maps");

/* keeps the enum in the object's BTF, where tests/unit/test_record.py checks it against Python */
enum vnt_tag_counter *vnt_btf_tag_counter __attribute__((unused));

struct vnt_tag_opt {
	__u8 kind;
	__u8 len;
	__be16 exid;
	__be32 id;
} __attribute__((packed));

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&vnt_tag_counters, &c);

	if (v)
		*v += 1;
}

SEC("sockops")
int vnt_tag(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	__u32 *id;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if (!sk)
			break;
		id = bpf_sk_storage_get(&vnt_tag_ids, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!id)
			break;
		*id = bpf_get_prandom_u32();
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
					  BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
		count(VNT_TAG_C_SOCKETS);
		break;
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		/* data segments, and MSS sizing (no packet: no flags); not pure ACKs or FINs */
		if (skops->skb_len == 0 && skops->skb_tcp_flags != 0)
			break;
		if (bpf_reserve_hdr_opt(skops, VNT_TCPOPT_LEN, 0))
			count(VNT_TAG_C_NO_ROOM);
		break;
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB: {
		struct vnt_tag_opt opt = {
			.kind = VNT_TCPOPT_KIND,
			.len = VNT_TCPOPT_LEN,
			.exid = bpf_htons(VNT_TCPOPT_EXID),
		};

		if (skops->skb_len == 0 || !sk)
			break;
		id = bpf_sk_storage_get(&vnt_tag_ids, sk, 0, 0);
		if (!id)
			break;
		opt.id = bpf_htonl(*id);
		if (bpf_store_hdr_opt(skops, &opt, sizeof(opt), 0)) {
			count(VNT_TAG_C_STORE_FAILED);
			break;
		}
		*id += 1;
		count(VNT_TAG_C_TAGGED);
		break;
	}
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
