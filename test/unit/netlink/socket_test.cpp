// socket_test.cpp — the netlink helper (netlink/netlink.hpp): the message builder
// and the message/attribute iterators agree with the kernel's macros (a nested
// attribute, padding, several messages in one buffer); a socket that cannot be
// opened reports the real errno (EMFILE when the process is out of file
// descriptors), not EBADF from using fd -1; an open one answers a request and a dump.
#include <doctest/doctest.h>
#include <linux/rtnetlink.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "netlink/netlink.hpp"
#include "test/support/fd_exhaustion.hpp"

using tabby::IpAddress;
using tabby::netlink::Attributes;
using tabby::netlink::MessageBuilder;
using tabby::netlink::Messages;
using tabby::netlink::Socket;

namespace {

std::vector<char> link_dump_request() {
  std::vector<char> b;
  MessageBuilder m(b, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP);
  m.family_header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  m.finish();
  return b;
}

}  // namespace

TEST_CASE("MessageBuilder: header, family header, plain and nested attributes, back-to-back messages") {
  std::vector<char> buf;
  {
    MessageBuilder m(buf, RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_CREATE, 7);
    m.family_header<rtmsg>()->rtm_family = AF_INET;
    m.address(RTA_DST, *IpAddress::parse("10.1.2.0"));
    m.u32(RTA_OIF, 42);
    size_t nest = m.nest_begin(RTA_MULTIPATH);
    m.attr(RTA_GATEWAY, "\x01\x02\x03", 3);  // 3 bytes: padded to 4
    m.nest_end(nest);
    m.finish();
  }
  const size_t first_len = buf.size();
  {
    MessageBuilder m(buf, RTM_DELROUTE, NLM_F_REQUEST, 8);
    m.family_header<rtmsg>()->rtm_family = AF_INET6;
    m.finish();
  }
  CHECK(first_len % 4 == 0);
  CHECK(reinterpret_cast<const nlmsghdr*>(buf.data())->nlmsg_len == first_len);

  std::vector<uint16_t> types;
  std::vector<uint32_t> seqs;
  for (const nlmsghdr* h : Messages(buf.data(), static_cast<ssize_t>(buf.size()))) {
    types.push_back(h->nlmsg_type);
    seqs.push_back(h->nlmsg_seq);
  }
  CHECK(types == std::vector<uint16_t>{RTM_NEWROUTE, RTM_DELROUTE});
  CHECK(seqs == std::vector<uint32_t>{7, 8});

  const auto* h = reinterpret_cast<const nlmsghdr*>(buf.data());
  const auto* rt = static_cast<const rtmsg*>(NLMSG_DATA(h));
  std::vector<uint16_t> attrs;
  std::string dst, gw;
  uint32_t oif = 0;
  for (const rtattr* a : Attributes(RTM_RTA(rt), static_cast<int>(RTM_PAYLOAD(h)))) {
    attrs.push_back(a->rta_type);
    if (a->rta_type == RTA_DST) dst = tabby::netlink::address_of(a, AF_INET).str();
    if (a->rta_type == RTA_OIF) oif = *static_cast<const uint32_t*>(RTA_DATA(a));
    if (a->rta_type == RTA_MULTIPATH)
      for (const rtattr* n : Attributes(static_cast<const rtattr*>(RTA_DATA(a)), static_cast<int>(RTA_PAYLOAD(a)))) {
        CHECK(n->rta_type == RTA_GATEWAY);
        CHECK(RTA_PAYLOAD(n) == 3);
        gw.assign(static_cast<const char*>(RTA_DATA(n)), RTA_PAYLOAD(n));
      }
  }
  CHECK(attrs == std::vector<uint16_t>{RTA_DST, RTA_OIF, RTA_MULTIPATH});
  CHECK(dst == "10.1.2.0");
  CHECK(oif == 42);
  CHECK(gw == "\x01\x02\x03");
}

TEST_CASE("put_attr: writes one attribute in place with its padding zeroed") {
  char buf[16];
  std::fill(std::begin(buf), std::end(buf), '\xff');
  char* end = tabby::netlink::put_attr(buf, RTA_TABLE, "\x05", 1);
  CHECK(end - buf == RTA_SPACE(1));
  const auto* a = reinterpret_cast<const rtattr*>(buf);
  CHECK(a->rta_type == RTA_TABLE);
  CHECK(a->rta_len == RTA_LENGTH(1));
  CHECK(buf[RTA_LENGTH(1)] == 0);
  CHECK(buf[RTA_SPACE(1) - 1] == 0);
  CHECK(buf[RTA_SPACE(1)] == '\xff');  // nothing written past the attribute
}

TEST_CASE("Socket: an open socket answers a link request and a link dump") {
  Socket nl;
  REQUIRE(nl.open());
  CHECK(nl.open_error() == 0);
  CHECK(nl.portid() != 0);
  auto req = link_dump_request();
  int links = 0;
  CHECK(nl.request(req, [&](const nlmsghdr* h) { links += h->nlmsg_type == RTM_NEWLINK; }) == 0);
  CHECK(links >= 1);  // lo at least
  ifinfomsg fam{};
  fam.ifi_family = AF_UNSPEC;
  int dumped = 0;
  auto st = nl.dump(RTM_GETLINK, fam, [&](const nlmsghdr* h) { dumped += h->nlmsg_type == RTM_NEWLINK; });
  CHECK(st.ok());
  CHECK(dumped == links);
}

TEST_CASE("Socket: a kernel error comes back as -errno") {
  Socket nl;
  REQUIRE(nl.open());
  std::vector<char> b;
  MessageBuilder m(b, RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK);
  m.family_header<ifinfomsg>()->ifi_index = 0x7ffffff0;  // no such interface
  m.finish();
  int err = nl.request(b);
  CHECK(err < 0);
  CHECK(err != -EBADF);
}

TEST_CASE("Socket: out of file descriptors reports EMFILE, not EBADF") {
  tabby::test::FdExhaustion fds;
  int open_error = 0, request_error = 0;
  std::string open_message;
  {
    Socket nl;
    auto st = nl.open();
    if (!st) open_message = st.error().message;
    open_error = nl.open_error();
    auto req = link_dump_request();
    request_error = nl.request(req);
  }
  size_t held = fds.held();
  fds.release();
  CHECK(held > 0);
  CHECK(open_error == -EMFILE);
  CHECK(request_error == -EMFILE);
  CHECK(open_message.find("Too many open files") != std::string::npos);
}
