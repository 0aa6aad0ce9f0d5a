// rtnl.cpp — raw rtnetlink codec and batched socket for routes and links (see
// rtnl.hpp). Message layouts per rtnetlink(7): nlmsghdr + rtmsg + RTA_* attributes;
// ECMP as RTA_MULTIPATH holding rtnexthop entries (weight stored as hops-1).
// The socket sets NETLINK_CAP_ACK so an ACK is 36 bytes, and large SO_SNDBUF /
// SO_RCVBUF so one sendmsg can carry ~256 KiB of route messages. The kernel handles
// every message of a send in turn inside sendmsg (rtnetlink_rcv -> netlink_rcv_skb)
// and answers each one that asks for an ACK or fails (netlink(7): "an error
// message is always sent on failure"); only the last message of a batch asks, so
// the receive queue holds one ACK per batch plus the errors. A route message is
// encoded as the key part (rtmsg, RTA_DST, RTA_TABLE past 255, RTA_PRIORITY) and
// the attribute part cached per distinct value by encode_attrs(). The socket,
// the message builder and the message/attribute iterators are netlink/netlink.hpp's.
#include "dataplane/rtnl.hpp"

#include <errno.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace tabby::dataplane::rtnl {

namespace {

constexpr int kSockBuf = 16 * 1024 * 1024;

using netlink::Attributes;
using netlink::Messages;

}  // namespace

std::string LinkTable::name_of(int ifindex) const {
  auto it = by_index.find(ifindex);
  return it == by_index.end() ? "if" + std::to_string(ifindex) : it->second.name;
}

void LinkTable::set(const Link& l) {
  auto it = by_index.find(l.ifindex);
  if (it != by_index.end() && it->second.name != l.name) by_name.erase(it->second.name);
  if (it == by_index.end() || it->second.name != l.name) ++generation;
  by_index[l.ifindex] = l;
  by_name[l.name] = l.ifindex;
}

void LinkTable::erase(int ifindex) {
  auto it = by_index.find(ifindex);
  if (it == by_index.end()) return;
  auto n = by_name.find(it->second.name);
  if (n != by_name.end() && n->second == ifindex) by_name.erase(n);
  by_index.erase(it);
  ++generation;
}

Status Socket::open(const std::vector<unsigned>& groups) {
  netlink::Socket::Options opt;
  opt.groups = groups;
  opt.buffer_bytes = groups.empty() ? kSockBuf : 4 * kSockBuf;
  opt.cap_ack = true;
  // receive_bytes stays at the 64 KB default: one recv returns one datagram, and
  // the kernel's are at most 32 KB (a dump part) or one message (an ACK, an
  // event). A 1 MB buffer here cost 1 MB of RSS per socket (two of them).
  return sock_.open(opt);
}

Status Socket::ignore_sender(uint32_t portid) { return sock_.ignore_sender(portid); }

void encode_attrs(const RouteAttrs& a, const LinkTable& links, AttrTable::Cache& c) {
  std::vector<char> b;
  netlink::MessageBuilder m(b, 0, 0, 0);  // only the attribute bytes after the header are kept
  c.ok = true;
  c.scope = RT_SCOPE_UNIVERSE;
  c.flags = 0;
  c.gw_family = 0;
  auto note_family = [&](const NextHop& h) {
    if (!h.gateway) return;
    uint8_t f = static_cast<uint8_t>(h.gateway->family());
    if (c.gw_family && c.gw_family != f) c.gw_family = AttrTable::Cache::kMixed;
    else c.gw_family = f;
  };
  if (a.prefsrc) m.address(RTA_PREFSRC, *a.prefsrc);
  if (a.type == RouteType::Unicast && a.nexthops.size() == 1) {
    const NextHop& h = a.nexthops[0];
    if (!h.gateway) c.scope = RT_SCOPE_LINK;
    if (h.onlink) c.flags |= RTNH_F_ONLINK;
    if (!h.ifname.empty()) {
      int idx = links.index_of(h.ifname);
      c.ok = idx != 0;
      m.u32(RTA_OIF, static_cast<uint32_t>(idx));
    }
    if (h.gateway) m.address(RTA_GATEWAY, *h.gateway);
    note_family(h);
  } else if (a.type == RouteType::Unicast && a.nexthops.size() > 1) {
    size_t mp = m.nest_begin(RTA_MULTIPATH);
    for (const NextHop& h : a.nexthops) {
      size_t off = b.size();
      b.resize(off + RTNH_ALIGN(sizeof(rtnexthop)));
      int idx = h.ifname.empty() ? 0 : links.index_of(h.ifname);
      if (!h.ifname.empty() && !idx) c.ok = false;
      note_family(h);
      if (h.gateway) m.address(RTA_GATEWAY, *h.gateway);
      auto* nh = reinterpret_cast<rtnexthop*>(b.data() + off);
      nh->rtnh_flags = h.onlink ? RTNH_F_ONLINK : 0;
      nh->rtnh_hops = static_cast<uint8_t>(h.weight ? h.weight - 1 : 0);
      nh->rtnh_ifindex = idx;
      nh->rtnh_len = static_cast<unsigned short>(b.size() - off);
    }
    m.nest_end(mp);
  }
  c.bytes.assign(b.data() + NLMSG_HDRLEN, b.size() - NLMSG_HDRLEN);
}

void Socket::queue_route(uint16_t type, uint16_t flags, const RouteKey& k, uint8_t rtype, uint8_t scope,
                         uint8_t rflags, const std::string* tail, size_t tag) {
  // One resize per message; every field is written in place.
  const bool v4 = k.dst.is_v4();
  const size_t alen = v4 ? 4 : 16;
  const bool big_table = k.table >= 256;
  size_t len = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(rtmsg)) + RTA_SPACE(alen) + (big_table ? RTA_SPACE(4) : 0) +
               (k.metric ? RTA_SPACE(4) : 0) + (tail ? tail->size() : 0);
  char* p = reserve_out(len);
  std::memset(p, 0, NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(rtmsg)));
  auto* h = reinterpret_cast<nlmsghdr*>(p);
  h->nlmsg_len = static_cast<uint32_t>(len);
  h->nlmsg_type = type;
  h->nlmsg_flags = flags;
  const uint32_t seq = sock_.next_seq();
  h->nlmsg_seq = seq;
  auto* rt = reinterpret_cast<rtmsg*>(p + NLMSG_HDRLEN);
  rt->rtm_family = v4 ? AF_INET : AF_INET6;
  rt->rtm_dst_len = k.dst.len();
  rt->rtm_table = static_cast<uint8_t>(big_table ? RT_TABLE_UNSPEC : k.table);
  rt->rtm_protocol = kTabbyRouteProtocol;
  rt->rtm_scope = scope;
  rt->rtm_type = rtype;
  rt->rtm_flags = rflags;
  p += NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(rtmsg));
  p = netlink::put_attr(p, RTA_DST, k.dst.addr().bytes().data(), alen);
  if (big_table) p = netlink::put_attr(p, RTA_TABLE, &k.table, 4);
  if (k.metric) p = netlink::put_attr(p, RTA_PRIORITY, &k.metric, 4);
  if (tail && !tail->empty()) std::memcpy(p, tail->data(), tail->size());
  out_len_ += len;
  if (tags_.empty()) first_seq_ = seq;
  tags_.push_back(tag);
  msg_end_.push_back(out_len_);
}

char* Socket::reserve_out(size_t len) {
  if (out_len_ + len > out_cap_) {
    size_t cap = std::max<size_t>({out_cap_ * 2, kBatchBytes + 64 * 1024, out_len_ + len});
    std::unique_ptr<char[]> bigger(new char[cap]);
    if (out_len_) std::memcpy(bigger.get(), out_.get(), out_len_);
    out_ = std::move(bigger);
    out_cap_ = cap;
  }
  return out_.get() + out_len_;
}

void Socket::queue_upsert(const RouteKey& k, RouteType type, const AttrTable::Cache& attrs, size_t tag) {
  queue_route(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE, k,
              type == RouteType::Blackhole ? RTN_BLACKHOLE : RTN_UNICAST, attrs.scope, attrs.flags, &attrs.bytes, tag);
}

void Socket::queue_delete(const RouteKey& k, RouteType type, size_t tag) {
  // scope NOWHERE matches any scope; the protocol in the request makes the kernel
  // refuse to delete a route of another protocol.
  queue_route(RTM_DELROUTE, NLM_F_REQUEST, k, type == RouteType::Blackhole ? RTN_BLACKHOLE : RTN_UNICAST,
              RT_SCOPE_NOWHERE, 0, nullptr, tag);
}

Status Socket::flush(const std::function<void(size_t, int)>& done) {
  size_t n = tags_.size();
  size_t first = 0;
  Status result;
  while (first < n && result) {
    // One batch: as many whole messages as fit in kBatchBytes.
    size_t begin = first ? msg_end_[first - 1] : 0;
    size_t last = first;
    while (last < n && msg_end_[last] - begin <= kBatchBytes) ++last;
    if (last == first) ++last;
    // The batch's last message asks for the ACK that closes the batch.
    size_t last_begin = last - 1 > first ? msg_end_[last - 2] : begin;
    reinterpret_cast<nlmsghdr*>(out_.get() + last_begin)->nlmsg_flags |= NLM_F_ACK;
    const uint32_t barrier = first_seq_ + static_cast<uint32_t>(last - 1);
    if (auto s = sock_.send_all(out_.get() + begin, msg_end_[last - 1] - begin); !s) {
      result = s;
      break;
    }
    // The kernel processed the batch inside sendmsg: its answers are queued now.
    // Non-blocking reads: if the closing ACK is not there once the queue is empty,
    // the kernel stopped short of the batch's end and the batch counts as failed.
    errs_.clear();
    bool closed = false;
    while (!closed) {
      ssize_t len = sock_.receive(MSG_DONTWAIT);
      if (len < 0) {
        if (errno == EINTR) continue;
        result = fail_msg(errno == EAGAIN || errno == EWOULDBLOCK
                              ? std::string("netlink: no answer to the end of a batch")
                              : std::string("netlink ack read: ") + std::strerror(errno));
        break;
      }
      for (const nlmsghdr* h : Messages(sock_.received(), len)) {
        if (h->nlmsg_type != NLMSG_ERROR) continue;
        auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        uint32_t idx = h->nlmsg_seq - first_seq_;
        if (idx < first || idx >= last) continue;  // a stale answer
        if (e->error) errs_.emplace_back(idx, -e->error);
        if (h->nlmsg_seq == barrier) closed = true;
      }
    }
    if (!result) break;  // answers lost: the whole batch is reported failed below
    std::sort(errs_.begin(), errs_.end());
    size_t ei = 0;
    for (size_t i = first; i < last; ++i) {
      int err = 0;
      while (ei < errs_.size() && errs_[ei].first < i) ++ei;
      if (ei < errs_.size() && errs_[ei].first == i) err = errs_[ei].second;
      done(tags_[i], err);
    }
    first = last;
  }
  if (!result) {
    for (size_t i = first; i < n; ++i) done(tags_[i], EIO);
  }
  out_len_ = 0;
  tags_.clear();
  msg_end_.clear();
  return result;
}

Status Socket::dump_routes(const LinkTable& links, const std::function<void(KernelRoute&)>& each) {
  KernelRoute kr;
  for (uint8_t fam : {uint8_t{AF_INET}, uint8_t{AF_INET6}}) {
    rtmsg req{};
    req.rtm_family = fam;
    auto s = sock_.dump(RTM_GETROUTE, req, [&](const nlmsghdr* h) {
      if (h->nlmsg_type == RTM_NEWROUTE && parse_route(h, links, kr)) each(kr);
    });
    if (!s) return s;
  }
  return {};
}

Result<std::vector<Link>> Socket::dump_links() {
  std::vector<Link> out;
  ifinfomsg req{};
  req.ifi_family = AF_UNSPEC;
  auto s = sock_.dump(RTM_GETLINK, req, [&](const nlmsghdr* h) {
    Link l;
    if (h->nlmsg_type == RTM_NEWLINK && parse_link(h, l)) out.push_back(l);
  });
  if (!s) return fail(s.error());
  return out;
}

Status Socket::read_events(const LinkTable& links, std::vector<Event>& out, bool& overflow, uint32_t skip_portid) {
  for (;;) {
    ssize_t len = sock_.receive(MSG_DONTWAIT);
    if (len < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return {};
      if (errno == ENOBUFS) {
        overflow = true;
        continue;
      }
      return fail_msg(std::string("netlink event read: ") + std::strerror(errno));
    }
    for (const nlmsghdr* h : Messages(sock_.received(), len)) {
      if (skip_portid && h->nlmsg_pid == skip_portid &&
          (h->nlmsg_type == RTM_NEWROUTE || h->nlmsg_type == RTM_DELROUTE))
        continue;  // our own write: the index already follows its ACK
      Event ev{};
      ev.sender_portid = h->nlmsg_pid;
      if (h->nlmsg_type == RTM_NEWROUTE || h->nlmsg_type == RTM_DELROUTE) {
        if (!parse_route(h, links, ev.route)) continue;
        ev.kind = h->nlmsg_type == RTM_NEWROUTE ? Event::NewRoute : Event::DelRoute;
      } else if (h->nlmsg_type == RTM_NEWLINK || h->nlmsg_type == RTM_DELLINK) {
        if (!parse_link(h, ev.link)) continue;
        ev.kind = h->nlmsg_type == RTM_NEWLINK ? Event::NewLink : Event::DelLink;
      } else {
        continue;
      }
      out.push_back(std::move(ev));
    }
  }
}

bool parse_route(const nlmsghdr* h, const LinkTable& links, KernelRoute& out) {
  const auto* rt = static_cast<const rtmsg*>(NLMSG_DATA(h));
  if (rt->rtm_flags & RTM_F_CLONED) return false;
  if (rt->rtm_family != AF_INET && rt->rtm_family != AF_INET6) return false;
  Route& r = out.route;
  r.nexthops.clear();
  r.prefsrc.reset();
  r.metric = 0;
  switch (rt->rtm_type) {
    case RTN_UNICAST: r.type = RouteType::Unicast; break;
    case RTN_BLACKHOLE: case RTN_UNREACHABLE: case RTN_PROHIBIT: r.type = RouteType::Blackhole; break;
    default: return false;
  }
  out.protocol = rt->rtm_protocol;
  r.table = rt->rtm_table;
  IpAddress dst = rt->rtm_family == AF_INET ? IpAddress() : IpAddress::v6_bytes(IpAddress().bytes().data());
  int oif = 0;
  std::optional<IpAddress> gw;
  int len = static_cast<int>(RTM_PAYLOAD(h));
  for (const rtattr* a : Attributes(RTM_RTA(rt), len)) {
    switch (a->rta_type) {
      case RTA_TABLE: r.table = *static_cast<const uint32_t*>(RTA_DATA(a)); break;
      case RTA_DST: dst = netlink::address_of(a, rt->rtm_family); break;
      case RTA_OIF: oif = *static_cast<const int*>(RTA_DATA(a)); break;
      case RTA_GATEWAY: gw = netlink::address_of(a, rt->rtm_family); break;
      case RTA_PRIORITY: r.metric = *static_cast<const uint32_t*>(RTA_DATA(a)); break;
      case RTA_PREFSRC: r.prefsrc = netlink::address_of(a, rt->rtm_family); break;
      case RTA_NH_ID: return false;
      case RTA_MULTIPATH: {
        auto* nh = static_cast<const rtnexthop*>(RTA_DATA(a));
        int left = static_cast<int>(RTA_PAYLOAD(a));
        while (RTNH_OK(nh, left)) {
          NextHop hop;
          hop.ifname = nh->rtnh_ifindex ? links.name_of(nh->rtnh_ifindex) : "";
          hop.onlink = nh->rtnh_flags & RTNH_F_ONLINK;
          hop.weight = static_cast<uint8_t>(nh->rtnh_hops + 1);
          int alen = nh->rtnh_len - static_cast<int>(sizeof(rtnexthop));
          for (const rtattr* na : Attributes(RTNH_DATA(nh), alen))
            if (na->rta_type == RTA_GATEWAY) hop.gateway = netlink::address_of(na, rt->rtm_family);
          r.nexthops.push_back(std::move(hop));
          left -= NLMSG_ALIGN(nh->rtnh_len);
          nh = RTNH_NEXT(nh);
        }
        break;
      }
      default: break;
    }
  }
  if (r.table == RT_TABLE_LOCAL) return false;
  r.dst = Prefix(dst, rt->rtm_dst_len);
  if (r.type == RouteType::Unicast && r.nexthops.empty()) {
    NextHop& hop = r.nexthops.emplace_back();
    hop.gateway = gw;
    if (oif) hop.ifname = links.name_of(oif);
    hop.onlink = rt->rtm_flags & RTNH_F_ONLINK;
  }
  return true;
}

bool parse_link(const nlmsghdr* h, Link& out) {
  const auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(h));
  out.ifindex = ifi->ifi_index;
  out.flags = ifi->ifi_flags;
  int len = static_cast<int>(IFLA_PAYLOAD(h));
  for (const rtattr* a : Attributes(IFLA_RTA(ifi), len))
    if (a->rta_type == IFLA_IFNAME) out.name = static_cast<const char*>(RTA_DATA(a));
  return !out.name.empty();
}

}  // namespace tabby::dataplane::rtnl
