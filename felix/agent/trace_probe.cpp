// trace_probe.cpp — the kernel's side of `tabby policy trace` (trace_probe.hpp):
// chain listings for the live counters, and the `--check` probe.
#include "felix/agent/trace_probe.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/net_namespace.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "netlink/netlink.hpp"

namespace tabby::felix {

namespace {

std::string errno_text(int e) { return std::strerror(e); }

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) close(fd_);
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// The namespace id (in the agent's namespace) of host veth `ifname`'s peer.
Result<int> peer_nsid(netlink::Socket& sk, const std::string& ifname) {
  std::vector<char> req;
  netlink::MessageBuilder b(req, RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK);
  b.family_header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  b.attr(IFLA_IFNAME, ifname.c_str(), ifname.size() + 1);
  b.finish();
  std::optional<int> nsid;
  int rc = sk.request(req, [&](const nlmsghdr* h) {
    if (h->nlmsg_type != RTM_NEWLINK) return;
    for (const rtattr* a : netlink::attributes_after<ifinfomsg>(h))
      if (a->rta_type == IFLA_LINK_NETNSID && RTA_PAYLOAD(a) >= 4) {
        int32_t v;
        std::memcpy(&v, RTA_DATA(a), 4);
        nsid = v;
      }
  });
  if (rc != 0) return fail_msg("interface " + ifname + ": " + errno_text(-rc));
  if (!nsid || *nsid < 0) return fail_msg("interface " + ifname + " has no peer in another network namespace");
  return *nsid;
}

// The namespace id the agent's namespace gives the namespace of file `fd` (-1: none).
int nsid_of(netlink::Socket& sk, int fd) {
  std::vector<char> req;
  netlink::MessageBuilder b(req, RTM_GETNSID, NLM_F_REQUEST | NLM_F_ACK);
  b.family_header<rtgenmsg>()->rtgen_family = AF_UNSPEC;
  b.u32(NETNSA_FD, static_cast<uint32_t>(fd));
  b.finish();
  int nsid = -1;
  int rc = sk.request(req, [&](const nlmsghdr* h) {
    if (h->nlmsg_type != RTM_NEWNSID) return;
    for (const rtattr* a : netlink::attributes_after<rtgenmsg>(h))
      if (a->rta_type == NETNSA_NSID && RTA_PAYLOAD(a) >= 4) std::memcpy(&nsid, RTA_DATA(a), 4);
  });
  return rc == 0 ? nsid : -1;
}

// A path to the network namespace of host veth `ifname`'s peer: the named
// namespaces (/run/netns, /var/run/netns) first, then every process's.
Result<std::string> peer_netns_path(const std::string& ifname) {
  netlink::Socket sk;
  if (auto st = sk.open(); !st) return fail_msg("netlink: " + st.error().message);
  auto want = peer_nsid(sk, ifname);
  if (!want) return fail(want.error());
  std::vector<std::string> candidates;
  for (const char* dir : {"/run/netns", "/var/run/netns"})
    if (DIR* d = opendir(dir)) {
      while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') candidates.push_back(std::string(dir) + "/" + e->d_name);
      closedir(d);
    }
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] >= '1' && e->d_name[0] <= '9') candidates.push_back(std::string("/proc/") + e->d_name + "/ns/net");
    closedir(d);
  }
  std::set<std::pair<dev_t, ino_t>> seen;
  for (const auto& path : candidates) {
    struct stat st{};
    if (stat(path.c_str(), &st) != 0 || !seen.insert({st.st_dev, st.st_ino}).second) continue;
    Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) continue;
    if (nsid_of(sk, fd.get()) == *want) return path;
  }
  return fail_msg("the network namespace of " + ifname + "'s peer (nsid " + std::to_string(*want) +
                  ") is under neither /run/netns nor /proc/*/ns/net");
}

// A socket created inside the network namespace at `path` (it stays there; the
// agent's threads never change namespace: a short-lived thread does).
Result<Fd> socket_in(const std::string& path, int domain, int type, int protocol) {
  int fd = -1, err = 0;
  std::string where;
  std::thread t([&] {
    Fd ns(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (ns.get() < 0) {
      err = errno;
      where = "open " + path;
      return;
    }
    if (setns(ns.get(), CLONE_NEWNET) != 0) {
      err = errno;
      where = "setns " + path;
      return;
    }
    fd = socket(domain, type | SOCK_CLOEXEC, protocol);
    if (fd < 0) {
      err = errno;
      where = "socket in " + path;
    }
  });
  t.join();
  if (fd < 0) return fail_msg(where + ": " + errno_text(err));
  return Fd(fd);
}

sockaddr_storage sockaddr_of(const IpAddress& a, uint16_t port, socklen_t& len) {
  sockaddr_storage ss{};
  if (a.is_v4()) {
    auto* s = reinterpret_cast<sockaddr_in*>(&ss);
    s->sin_family = AF_INET;
    s->sin_port = htons(port);
    std::memcpy(&s->sin_addr, a.bytes().data(), 4);
    len = sizeof(sockaddr_in);
  } else {
    auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(port);
    std::memcpy(&s->sin6_addr, a.bytes().data(), 16);
    len = sizeof(sockaddr_in6);
  }
  return ss;
}

uint16_t inet_checksum(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) sum += static_cast<uint32_t>(p[n - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// Whether `pkt` (from the network header on) is the probe.
bool is_probe(const uint8_t* pkt, size_t n, const policy::TraceFlow& f, uint16_t echo_id) {
  const bool v4 = f.src.is_v4();
  size_t l4 = 0;
  uint8_t proto = 0;
  if (v4) {
    if (n < 20 || (pkt[0] >> 4) != 4) return false;
    l4 = static_cast<size_t>(pkt[0] & 0x0f) * 4;
    proto = pkt[9];
    if (std::memcmp(pkt + 12, f.src.bytes().data(), 4) != 0 || std::memcmp(pkt + 16, f.dst.bytes().data(), 4) != 0)
      return false;
  } else {
    if (n < 40 || (pkt[0] >> 4) != 6) return false;
    l4 = 40;
    proto = pkt[6];  // the probe carries no extension headers
    if (std::memcmp(pkt + 8, f.src.bytes().data(), 16) != 0 || std::memcmp(pkt + 24, f.dst.bytes().data(), 16) != 0)
      return false;
  }
  if (proto != f.protocol || n < l4 + 8) return false;
  const uint8_t* h = pkt + l4;
  if (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
    return (h[0] << 8 | h[1]) == f.src_port && (h[2] << 8 | h[3]) == f.dst_port;
  return (h[4] << 8 | h[5]) == echo_id;  // ICMP / ICMPv6 echo identifier
}

}  // namespace

ProbeOutcome send_probe(const policy::TraceFlow& f, const std::string& src_iface, const std::string& dst_iface,
                        unsigned timeout_ms) {
  ProbeOutcome o;
  o.timeout_ms = timeout_ms;
  const bool v4 = f.src.is_v4();
  const char* pname = f.protocol == IPPROTO_TCP ? "tcp SYN" : f.protocol == IPPROTO_UDP ? "udp" : v4 ? "icmp" : "icmpv6";
  const bool icmp = v4 ? f.protocol == IPPROTO_ICMP : f.protocol == IPPROTO_ICMPV6;
  if (f.protocol != IPPROTO_TCP && f.protocol != IPPROTO_UDP && !icmp) {
    o.error = "check: a probe can be TCP, UDP or ICMP (of the flow's family) only";
    return o;
  }
  std::random_device rd;
  const uint16_t echo_id = static_cast<uint16_t>(rd());  // a fresh conntrack entry each probe
  o.probe = std::string(pname) + " " + f.src.str() + (icmp ? "" : ":" + std::to_string(f.src_port)) + " -> " +
            f.dst.str() + (icmp ? " type " + std::to_string(f.icmp_type) + " code " + std::to_string(f.icmp_code)
                                : ":" + std::to_string(f.dst_port));
  auto src_ns = peer_netns_path(src_iface);
  if (!src_ns) {
    o.error = "check: the source pod's namespace: " + src_ns.error().message;
    return o;
  }
  auto dst_ns = peer_netns_path(dst_iface);
  if (!dst_ns) {
    o.error = "check: the destination pod's namespace: " + dst_ns.error().message;
    return o;
  }
  // The watcher first: a packet socket in the destination's namespace.
  auto watch = socket_in(*dst_ns, AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (!watch) {
    o.error = "check: cannot watch the destination's namespace: " + watch.error().message;
    return o;
  }
  const int family = v4 ? AF_INET : AF_INET6;
  const int type = f.protocol == IPPROTO_TCP ? SOCK_STREAM : f.protocol == IPPROTO_UDP ? SOCK_DGRAM : SOCK_RAW;
  auto sock = socket_in(*src_ns, family, type | SOCK_NONBLOCK, icmp ? f.protocol : 0);
  if (!sock) {
    o.error = "check: cannot open the probe socket in the source's namespace: " + sock.error().message;
    return o;
  }
  const int s = sock->get();
  int one = 1;
  (void)setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t slen = 0, dlen = 0;
  sockaddr_storage src = sockaddr_of(f.src, icmp ? 0 : f.src_port, slen);
  sockaddr_storage dst = sockaddr_of(f.dst, icmp ? 0 : f.dst_port, dlen);
  if (bind(s, reinterpret_cast<sockaddr*>(&src), slen) != 0) {
    o.error = "check: bind to " + f.src.str() + (icmp ? "" : " port " + std::to_string(f.src_port)) + " in " + *src_ns +
              ": " + errno_text(errno) + (errno == EADDRNOTAVAIL ? " (that namespace does not hold the source's address)" : "");
    return o;
  }
  int rc = 0;
  if (f.protocol == IPPROTO_TCP) {
    rc = connect(s, reinterpret_cast<sockaddr*>(&dst), dlen);  // sends the SYN
    if (rc != 0 && errno == EINPROGRESS) rc = 0;
  } else if (f.protocol == IPPROTO_UDP) {
    static const char payload[] = "tabby policy trace probe";
    rc = static_cast<int>(sendto(s, payload, sizeof payload - 1, 0, reinterpret_cast<sockaddr*>(&dst), dlen));
  } else {
    uint8_t msg[16] = {};
    msg[0] = static_cast<uint8_t>(f.icmp_type);
    msg[1] = static_cast<uint8_t>(f.icmp_code);
    msg[4] = static_cast<uint8_t>(echo_id >> 8);
    msg[5] = static_cast<uint8_t>(echo_id);
    msg[7] = 1;  // sequence
    std::memcpy(msg + 8, "tabbyprb", 8);
    if (v4) {  // ICMPv6's checksum the kernel computes (it needs the pseudo-header)
      uint16_t c = inet_checksum(msg, sizeof msg);
      msg[2] = static_cast<uint8_t>(c >> 8);
      msg[3] = static_cast<uint8_t>(c);
    }
    rc = static_cast<int>(sendto(s, msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&dst), dlen));
  }
  if (rc < 0) {
    o.error = "check: sending the probe from " + *src_ns + ": " + errno_text(errno);
    return o;
  }
  o.sent = true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  uint8_t buf[2048];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{watch->get(), POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (;;) {
      sockaddr_ll from{};
      socklen_t flen = sizeof from;
      ssize_t got = recvfrom(watch->get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
      if (got < 0) break;
      if (from.sll_pkttype == PACKET_OUTGOING) continue;  // the destination's own sends
      if (is_probe(buf, static_cast<size_t>(got), f, echo_id)) {
        o.delivered = true;
        break;
      }
    }
    if (o.delivered) break;
  }
  if (f.protocol == IPPROTO_TCP) {  // no lingering handshake: close with a reset
    linger l{1, 0};
    (void)setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  return o;
}

// Whether `a` is an address of an interface in the agent's (the node's) namespace.
static bool is_local_address(const IpAddress& a) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return false;
  bool found = false;
  for (ifaddrs* i = list; i && !found; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    if (i->ifa_addr->sa_family == AF_INET && a.is_v4())
      found = IpAddress::v4_bytes(reinterpret_cast<const uint8_t*>(
                  &reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr)) == a;
    else if (i->ifa_addr->sa_family == AF_INET6 && a.is_v6())
      found = IpAddress::v6_bytes(reinterpret_cast<const uint8_t*>(
                  &reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr)) == a;
  }
  freeifaddrs(list);
  return found;
}

namespace {

ChainListings list_traced_chains(const policy::PolicyCompiler& c, policy::PolicyExecutor& x,
                                 const policy::TraceResult& r) {
  ChainListings l;
  for (const auto& chain : traced_chains(c, r)) {
    auto got = x.list_chain(c.options().table, chain);
    if (got) l[chain].rules = std::move(*got);
    else l[chain].error = got.error().message;
  }
  return l;
}

}  // namespace

PreparedTrace prepare_policy_trace(const policy::PolicyCompiler* c, policy::PolicyExecutor* x,
                                   const std::string& query) {
  PreparedTrace p;
  if (!c || !x) {
    p.answer = policy_trace_message(nullptr, query);
    return p;
  }
  auto req = parse_trace_query(*c, query);
  if (!req) {
    p.answer = std::make_unique<api::PolicyTrace>();
    p.answer->set_error(req.error().message);
    return p;
  }
  p.req = std::move(*req);
  p.req.flow.dst_is_host = is_local_address(p.req.flow.dst);
  // A probe from a source port of its own: a flow conntrack already knows
  // would pass as established, past every policy rule.
  if (p.req.check && !p.req.sport_given) {
    std::random_device rd;
    p.req.flow.src_port = static_cast<uint16_t>(32768 + rd() % 28000);
  }
  p.result = c->trace(p.req.flow);
  p.before = list_traced_chains(*c, *x, p.result);
  if (!p.req.check) {
    p.answer = policy_trace_answer(*c, p.req, p.result, &p.before);
    return p;
  }
  // Only between two pods of this node: the agent owns both ends' veths.
  ProbeOutcome refused;
  auto src = c->endpoint_at(p.req.flow.src), dst = c->endpoint_at(p.req.flow.dst);
  if (!src || src->iface.empty())
    refused.error = "check: the source " + p.req.from_shown + " is not a pod on this node; a probe is only sent "
                    "between two pods of this node";
  else if (!dst || dst->iface.empty())
    refused.error = "check: the destination " + p.req.to_shown + " is not a pod on this node; a probe is only sent "
                    "between two pods of this node";
  else if (p.req.flow.src == p.req.flow.dst)
    refused.error = "check: source and destination are the same address (the packet would not leave the pod)";
  if (!refused.error.empty()) {
    ChainListings none;
    p.answer = policy_trace_answer(*c, p.req, p.result, &p.before, &refused, &none);
    return p;
  }
  p.src_iface = src->iface;
  p.dst_iface = dst->iface;
  return p;
}

std::unique_ptr<api::PolicyTrace> finish_policy_trace(const policy::PolicyCompiler* c, policy::PolicyExecutor* x,
                                                      const PreparedTrace& p, const ProbeOutcome& probe) {
  if (!c || !x) {
    auto m = std::make_unique<api::PolicyTrace>();
    m->set_error("policy enforcement was turned off while the probe ran");
    return m;
  }
  ChainListings after = probe.sent ? list_traced_chains(*c, *x, p.result) : ChainListings{};
  return policy_trace_answer(*c, p.req, p.result, &p.before, &probe, &after);
}

}  // namespace tabby::felix
