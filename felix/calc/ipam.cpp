// ipam.cpp — the pure IPAM decisions (calc.hpp): which block a node claims next and
// which address of a block a pod gets. Calico's model: a pool is cut into blocks of
// `blockSize`; a node claims whole blocks (affinity) and hands out addresses from
// them; claims are atomic in the datastore, so these functions only decide.
#include <algorithm>

#include "felix/calc/calc.hpp"

namespace tabby::felix {
namespace {

// a + off (off < 2^64), within the address family; returns false on overflow.
bool add_offset(const IpAddress& a, uint64_t off, IpAddress& out) {
  auto bytes = a.bytes();
  int n = a.byte_width();
  unsigned __int128 carry = off;
  for (int i = n - 1; i >= 0 && carry; --i) {
    unsigned __int128 v = bytes[i] + (carry & 0xff);
    carry >>= 8;
    bytes[i] = static_cast<uint8_t>(v);
    carry += v >> 8;
  }
  if (carry) return false;
  out = a.is_v4() ? IpAddress::v4_bytes(bytes.data()) : IpAddress::v6_bytes(bytes.data());
  return true;
}

// Does any claimed block overlap `b`? (Claimed blocks never overlap each other, so
// the last one starting at or below b's address is the only one that can contain it.)
bool overlaps_claimed(const Prefix& b, const std::set<Prefix>& claimed) {
  auto it = claimed.upper_bound(Prefix(b.addr(), static_cast<uint8_t>(b.addr().bit_width())));
  if (it != claimed.begin() && std::prev(it)->overlaps(b)) return true;
  return it != claimed.end() && b.contains(it->addr());
}

}  // namespace

uint64_t block_capacity(const Prefix& block) {
  int host_bits = block.addr().bit_width() - block.len();
  if (host_bits >= 63) return UINT64_MAX;
  return (uint64_t{1} << host_bits) - 1;  // the first address is the tunnel address
}

std::optional<BlockChoice> choose_block(const std::vector<PoolView>& pools, const Labels& node_labels,
                                        const std::set<Prefix>& claimed, IpFamily fam) {
  for (const auto& pv : pools) {
    const IpPool& p = pv.pool;
    if (p.disabled || p.cidr.family() != fam || !p.node_selector.matches(node_labels, true)) continue;
    int width = p.cidr.addr().bit_width();
    int step_bits = width - p.block_size;
    if (step_bits >= 64) continue;  // not a block size tabby supports (Calico: /116+ for IPv6)
    uint64_t step = uint64_t{1} << step_bits;
    IpAddress cur = p.cidr.addr();
    while (p.cidr.contains(cur)) {
      Prefix b(cur, static_cast<uint8_t>(p.block_size));
      if (!overlaps_claimed(b, claimed)) return BlockChoice{b, pv.name};
      IpAddress next;
      if (!add_offset(cur, step, next) || next <= cur) break;
      cur = next;
    }
  }
  return std::nullopt;
}

std::optional<IpAddress> choose_ip(const Prefix& block, const std::set<IpAddress>& used) {
  IpAddress cur;
  if (!add_offset(block.addr(), 1, cur)) return std::nullopt;  // skip the reserved first address
  auto it = used.lower_bound(cur);
  while (block.contains(cur)) {
    while (it != used.end() && *it < cur) ++it;
    if (it == used.end() || *it != cur) return cur;
    IpAddress next;
    if (!add_offset(cur, 1, next)) return std::nullopt;
    cur = next;
  }
  return std::nullopt;
}

}  // namespace tabby::felix
