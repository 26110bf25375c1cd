// SPDX-License-Identifier: MIT
// XDP: parse Ethernet / IPv4 / UDP with a bounds check before every packet access, drop UDP datagrams with
// an empty payload and count the drops per protocol in an array map.
#include "bpf2sys.h"

#define ETH_P_IPV4 0x0800

struct ethernet_header {
    uint8_t destination[6];
    uint8_t source[6];
    uint16_t ethertype;
};

struct ipv4_header {
    uint8_t version_ihl;
    uint8_t tos;
    uint16_t total_length;
    uint16_t identification;
    uint16_t fragment;
    uint8_t ttl;
    uint8_t protocol;
    uint16_t checksum;
    uint32_t source;
    uint32_t destination;
};

struct udp_header {
    uint16_t source_port;
    uint16_t destination_port;
    uint16_t length;
    uint16_t checksum;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 256);
} dropped_packet_map SEC(".maps");

SEC("xdp")
int drop_empty_udp(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    uint8_t* data_end = ctx->data_end;
    struct ethernet_header* eth = (struct ethernet_header*)data;
    if ((uint8_t*)(eth + 1) > data_end)
        return XDP_PASS;
    if (eth->ethertype != bpf_htons(ETH_P_IPV4))
        return XDP_PASS;
    struct ipv4_header* ip = (struct ipv4_header*)(eth + 1);
    if ((uint8_t*)(ip + 1) > data_end)
        return XDP_PASS;
    if (ip->protocol != IPPROTO_UDP)
        return XDP_PASS;
    uint32_t ihl = (ip->version_ihl & 0x0f) * 4;
    if (ihl < sizeof(struct ipv4_header))
        return XDP_PASS;
    struct udp_header* udp = (struct udp_header*)((uint8_t*)ip + ihl);
    if ((uint8_t*)(udp + 1) > data_end)
        return XDP_PASS;
    if (bpf_ntohs(udp->length) > sizeof(struct udp_header))
        return XDP_PASS;
    uint32_t key = ip->protocol;
    uint64_t* count = bpf_map_lookup_elem(&dropped_packet_map, &key);
    if (count)
        __sync_fetch_and_add(count, 1);
    return XDP_DROP;
}
