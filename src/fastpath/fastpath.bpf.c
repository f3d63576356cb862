// SPDX-License-Identifier: GPL-2.0
//
// guardwire's kernel fast path: flows whose verdict is final, forwarded by the
// kernel between the two ports guardwire would have used.
//
// Two programs share the maps:
//  - `fast_tc` (tc ingress, tcx, direct action) on every workload and uplink
//    port: a frame of an offloaded flow, in a direction guardwire handed over,
//    is counted and redirected to its egress port; anything else goes on
//    (TCX_NEXT) to the ingress qdisc's filters (the `off` mode's u32
//    redirect) and guardwire's packet socket.
//  - `fast_sock` (socket filter) on guardwire's AF_PACKET sockets, which see a
//    frame before tc ingress: the frames `fast_tc` will redirect are not
//    copied into guardwire's ring.
//
// A frame is a hit only when all of these hold: its ingress port is one of
// guardwire's (the `ports` map gives its workload slot); the flow key (slot,
// protocol, both ends in canonical order) is in `flows`; the entry was made
// under the current epoch (`state.epoch`, moved on around every rule push) and
// guardwire's keep-alive (`state.alive_ns`) has not lapsed; the direction was handed
// over with this ingress port, these MAC addresses and this VLAN tag; and the
// frame is TCP, UDP or an ICMP echo, not a fragment, with no SYN, FIN or RST. The key and
// value layouts are mirrored in `src/fastpath/maps.rs`.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_FLOWS 131072 /* directions: two per flow */
#define MAX_PORTS 4096

struct key {
	__u32 slot;
	__u8 proto;
	__u8 family; /* 4 or 6 */
	__u8 dir;    /* 0: lo to hi, 1: hi to lo */
	__u8 pad;
	__u16 lo_port;
	__u16 hi_port;
	__u8 lo[16];
	__u8 hi[16];
};

struct side {
	__u32 in_ifindex; /* 0: this direction is not handed over */
	__u32 out_ifindex;
	__u8 src[6];
	__u8 dst[6];
	__u16 vlan_tci;
	__u16 vlan_proto; /* network byte order */
	__u8 vlan_present;
	__u8 pad[3];
};

/* One direction of one flow. The map is per CPU: the counters are added to
 * without atomics, and guardwire sums the CPUs' copies (the rest is the same
 * in every copy). */
struct value {
	__u64 epoch;
	struct side side;
	__u32 pad;
	__u64 frames;
	__u64 packets; /* GSO segments */
	__u64 bytes;   /* on the wire, each segment with its headers */
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct key);
	__type(value, struct value);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);   /* ifindex of one of guardwire's ports */
	__type(value, __u32); /* its workload's slot */
} ports SEC(".maps");

struct state {
	__u64 epoch;    /* in force; 0: nothing is forwarded */
	__u64 alive_ns; /* keep-alive deadline, CLOCK_MONOTONIC */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct state);
} state SEC(".maps");

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

struct hit {
	struct value *v;
	__u64 now;
	__u32 headers; /* Ethernet + IP + L4 header bytes */
};

/* Addresses compare byte by byte, as guardwire's `IpAddr` order does (an
 * IPv4 address fills the first 4 bytes, the rest are zero): four big-endian
 * words in turn. */
static __always_inline int word_cmp(const __u8 *a, const __u8 *b, int i)
{
	__u32 x, y;
	__builtin_memcpy(&x, a + 4 * i, 4);
	__builtin_memcpy(&y, b + 4 * i, 4);
	x = bpf_ntohl(x);
	y = bpf_ntohl(y);
	return x == y ? 0 : (x < y ? -1 : 1);
}

static __always_inline int addr_cmp(const __u8 *a, const __u8 *b)
{
	int c = word_cmp(a, b, 0);
	if (!c)
		c = word_cmp(a, b, 1);
	if (!c)
		c = word_cmp(a, b, 2);
	if (!c)
		c = word_cmp(a, b, 3);
	return c;
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

/* Looks the frame up; 0 and `h` filled on a hit. */
static __always_inline int lookup(struct __sk_buff *skb, struct hit *h)
{
	__u32 ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	__u32 *slot = bpf_map_lookup_elem(&ports, &ifindex);
	if (!slot)
		return -1;
	__u32 zero = 0;
	struct state *st = bpf_map_lookup_elem(&state, &zero);
	if (!st || st->epoch == 0)
		return -1;
	__u64 now = bpf_ktime_get_ns();
	if (now > st->alive_ns)
		return -1;

	struct ethhdr eth;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return -1;
	struct key k = {};
	k.slot = *slot;
	__u8 src[16] = {}, dst[16] = {};
	__u32 l4;
	if (eth.h_proto == bpf_htons(ETH_P_IP)) {
		__u8 ip[20];
		if (bpf_skb_load_bytes(skb, ETH_HLEN, ip, sizeof(ip)) < 0)
			return -1;
		if ((ip[0] >> 4) != 4 || (ip[0] & 0xf) < 5)
			return -1;
		/* MF set or a fragment offset: a fragment. */
		if ((ip[6] & 0x3f) || ip[7])
			return -1;
		k.proto = ip[9];
		k.family = 4;
		__builtin_memcpy(src, &ip[12], 4);
		__builtin_memcpy(dst, &ip[16], 4);
		l4 = ETH_HLEN + (ip[0] & 0xf) * 4;
	} else if (eth.h_proto == bpf_htons(ETH_P_IPV6)) {
		__u8 ip[40];
		if (bpf_skb_load_bytes(skb, ETH_HLEN, ip, sizeof(ip)) < 0)
			return -1;
		if ((ip[0] >> 4) != 6)
			return -1;
		/* Only TCP or UDP right after the fixed header: an extension
		 * header (a fragment among them) goes to guardwire. */
		k.proto = ip[6];
		k.family = 6;
		__builtin_memcpy(src, &ip[8], 16);
		__builtin_memcpy(dst, &ip[24], 16);
		l4 = ETH_HLEN + 40;
	} else {
		return -1;
	}
	__u16 ports4[2];
	__u32 l4len;
	if (k.proto == IPPROTO_TCP) {
		__u8 tcp[14];
		if (bpf_skb_load_bytes(skb, l4, tcp, sizeof(tcp)) < 0)
			return -1;
		if (tcp[13] & (TCP_SYN | TCP_FIN | TCP_RST))
			return -1;
		__builtin_memcpy(ports4, tcp, 4);
		l4len = (tcp[12] >> 4) * 4;
	} else if (k.proto == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, l4, ports4, 4) < 0)
			return -1;
		l4len = 8;
	} else if ((k.proto == IPPROTO_ICMP && k.family == 4) ||
		   (k.proto == IPPROTO_ICMPV6 && k.family == 6)) {
		/* Echo request and reply only: guardwire keys them by the
		 * identifier, at both ends. */
		__u8 icmp[6];
		if (bpf_skb_load_bytes(skb, l4, icmp, sizeof(icmp)) < 0)
			return -1;
		if (k.family == 4 ? (icmp[0] != 0 && icmp[0] != 8) : (icmp[0] != 128 && icmp[0] != 129))
			return -1;
		__builtin_memcpy(&ports4[0], &icmp[4], 2);
		__builtin_memcpy(&ports4[1], &icmp[4], 2);
		l4len = 8;
	} else {
		return -1;
	}
	__u16 sport = bpf_ntohs(ports4[0]), dport = bpf_ntohs(ports4[1]);
	int c = addr_cmp(src, dst);
	int forward = c < 0 || (c == 0 && sport <= dport);
	if (forward) {
		__builtin_memcpy(k.lo, src, 16);
		__builtin_memcpy(k.hi, dst, 16);
		k.lo_port = sport;
		k.hi_port = dport;
	} else {
		__builtin_memcpy(k.lo, dst, 16);
		__builtin_memcpy(k.hi, src, 16);
		k.lo_port = dport;
		k.hi_port = sport;
	}
	k.dir = forward ? 0 : 1;
	struct value *v = bpf_map_lookup_elem(&flows, &k);
	if (!v || v->epoch != st->epoch)
		return -1;
	struct side *s = &v->side;
	if (s->in_ifindex != ifindex || !s->out_ifindex)
		return -1;
	if (!mac_eq(s->src, eth.h_source) || !mac_eq(s->dst, eth.h_dest))
		return -1;
	if (s->vlan_present != (skb->vlan_present ? 1 : 0))
		return -1;
	if (s->vlan_present &&
	    (s->vlan_tci != (__u16)skb->vlan_tci || s->vlan_proto != (__u16)skb->vlan_proto))
		return -1;
	h->v = v;
	h->now = now;
	h->headers = l4 + l4len;
	return 0;
}

SEC("classifier")
int fast_tc(struct __sk_buff *skb)
{
	struct hit h;
	if (lookup(skb, &h) < 0)
		return TC_ACT_UNSPEC; /* TCX_NEXT */
	__u32 wire = skb->len + (skb->vlan_present ? 4 : 0);
	__u64 segs = 1;
	__u64 bytes = wire;
	if (skb->gso_size && skb->len > h.headers) {
		segs = (skb->len - h.headers + skb->gso_size - 1) / skb->gso_size;
		if (segs < 1)
			segs = 1;
		bytes = wire + (segs - 1) * h.headers;
	}
	/* This CPU's copy: no other CPU writes it. */
	h.v->frames += 1;
	h.v->packets += segs;
	h.v->bytes += bytes;
	h.v->last_ns = h.now;
	return bpf_redirect(h.v->side.out_ifindex, 0);
}

SEC("socket")
int fast_sock(struct __sk_buff *skb)
{
	struct hit h;
	if (lookup(skb, &h) == 0)
		return 0; /* fast_tc forwards it: not for guardwire's ring */
	return skb->len;
}

char LICENSE[] SEC("license") = "GPL";
