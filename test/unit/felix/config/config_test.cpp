// config_test.cpp — the agent config file: defaults, every key, and
// errors that name the file, the key and the reason.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <string>

#include "felix/config/config_file.hpp"

using namespace tabby;
using namespace tabby::felix;

namespace {
std::string error_of(const std::string& yaml) {
  auto r = parse_config(yaml, "node.yaml");
  return r.ok() ? std::string("<no error>") : r.error().message;
}
}  // namespace

TEST_CASE("a full config parses with every key") {
  auto r = parse_config(R"(
nodeName: node-a
routerID: 198.18.0.1
asNumber: 64512
listenAddress: 198.18.0.1
listenPort: 1179
apiSocket: /tmp/t/tabby.sock
clusterID: 1.2.3.4
gracefulRestart: {enabled: false, restartTime: 60}
peers:
  - peerIP: 198.18.0.2
    asNumber: 64513
    password: s3cret
    holdTime: 9
    keepaliveTime: 3
    connectRetryTime: 1
    passive: true
    routeReflectorClient: true
    families: [ipv4]
    nextHopMode: Self
    ttlSecurity: 1
    localAddress: 198.18.0.1
    maxRestartTime: 30
    longLivedStaleTime: 3600
    localAS: 65100
    allowOwnAS: 2
    export: {prefixes: [203.0.113.0/24], denyCommunities: ["65535:666", no-export]}
  - peerIP: "[2001:db8::2]:1179"
    asNumber: 4200000000
announce:
  - prefix: 203.0.113.0/24
    communities: ["64512:100"]
    largeCommunities: ["64512:1:2"]
    nextHop: 198.18.0.1
  - prefix: 2001:db8:1::/48
)", "node.yaml");
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
  const auto& c = *r;
  CHECK(c.node_name == "node-a");
  CHECK(c.api_socket == "/tmp/t/tabby.sock");
  CHECK(c.bgp.listen_port == 1179);
  CHECK(c.bgp.cluster_id->str() == "1.2.3.4");
  CHECK_FALSE(c.bgp.graceful_restart);
  CHECK(c.bgp.restart_time == 60);
  REQUIRE(c.bgp.peers.size() == 2);
  const auto& p = c.bgp.peers[0];
  CHECK(p.address.str() == "198.18.0.2");
  CHECK(p.port == 179);
  CHECK(p.password == "s3cret");
  CHECK(p.hold_time == 9);
  CHECK(p.keepalive_time == 3);
  CHECK(p.passive);
  CHECK(p.route_reflector_client);
  CHECK(p.families == std::vector<bgp::Family>{bgp::kIpv4Unicast});
  CHECK(p.next_hop_mode == bgp::NextHopMode::Self);
  CHECK(p.ttl_security_hops == 1);
  CHECK(p.max_restart_time == 30);
  CHECK(p.long_lived_stale_time == 3600);
  CHECK(p.local_as == std::optional<uint32_t>(65100));
  CHECK(p.allow_own_as == 2);
  CHECK_FALSE(c.bgp.peers[1].local_as);
  CHECK(c.bgp.peers[1].long_lived_stale_time == 0);
  CHECK(p.export_filter.allowed_prefixes.size() == 1);
  CHECK(p.export_filter.denied_communities == std::vector<uint32_t>{65535u << 16 | 666, bgp::kNoExport});
  CHECK(c.bgp.peers[1].address.str() == "2001:db8::2");
  CHECK(c.bgp.peers[1].port == 1179);
  CHECK(c.bgp.peers[1].asn == 4200000000u);
  REQUIRE(c.bgp.announcements.size() == 2);
  CHECK(c.bgp.announcements[0].communities == std::vector<uint32_t>{64512u << 16 | 100});
  CHECK(c.bgp.announcements[0].large_communities[0] == bgp::LargeCommunity{64512, 1, 2});
}

TEST_CASE("defaults follow Calico and BIRD") {
  auto r = parse_config("nodeName: n\nrouterID: 10.0.0.1\npeers: [{peerIP: 10.0.0.2, asNumber: 64512}]\n", "x");
  REQUIRE(r.ok());
  CHECK(r->bgp.asn == 64512);
  CHECK(r->bgp.listen_port == 179);
  CHECK(r->bgp.graceful_restart);
  CHECK(r->api_socket == "/run/tabby/tabby.sock");
  CHECK(r->bgp.peers[0].hold_time == 90);
  CHECK(r->bgp.peers[0].families.size() == 2);
}

TEST_CASE("errors name the file, the key and the reason") {
  CHECK(error_of("nodeName: n\nrouterID: 10.0.0.1\nrouterId: 1.1.1.1\n").find("node.yaml: key 'routerId': unknown key") == 0);
  CHECK(error_of("routerID: 10.0.0.1\n") == "node.yaml: key 'nodeName': is required (or set NODENAME in the environment)");
  CHECK(error_of("nodeName: n\nrouterID: 2001:db8::1\n").find("key 'routerID': must be an IPv4 address") != std::string::npos);
  auto hold = error_of("nodeName: n\nrouterID: 10.0.0.1\npeers: [{peerIP: 10.0.0.2, asNumber: 1, holdTime: 2}]\n");
  CHECK(hold.find("key 'peers[0].holdTime': must be 0 or at least 3") != std::string::npos);
  auto asn = error_of("nodeName: n\nrouterID: 10.0.0.1\npeers: [{peerIP: 10.0.0.2, asNumber: abc}]\n");
  CHECK(asn.find("key 'peers[0].asNumber': must be a whole number (got 'abc')") != std::string::npos);
  auto llgr = error_of("nodeName: n\nrouterID: 10.0.0.1\npeers: [{peerIP: 10.0.0.2, asNumber: 1, longLivedStaleTime: 16777216}]\n");
  CHECK(llgr.find("key 'peers[0].longLivedStaleTime'") != std::string::npos);
  auto fam = error_of("nodeName: n\nrouterID: 10.0.0.1\npeers: [{peerIP: 10.0.0.2, asNumber: 1, families: [ipx]}]\n");
  CHECK(fam.find("key 'peers[0].families[0]': unknown family 'ipx'") != std::string::npos);
  auto host = error_of("nodeName: n\nrouterID: 10.0.0.1\nannounce: [{prefix: 203.0.113.7/24}]\n");
  CHECK(host.find("did you mean 203.0.113.0/24") != std::string::npos);
  auto dup = error_of("nodeName: n\nrouterID: 10.0.0.1\npeers: [{peerIP: 10.0.0.2, asNumber: 1}, {peerIP: 10.0.0.2, asNumber: 2}]\n");
  CHECK(dup.find("duplicate peer 10.0.0.2") != std::string::npos);
  CHECK(error_of("nodeName: [\n").find("node.yaml: YAML syntax error at line") == 0);
  CHECK(error_of("").find("the file is empty") != std::string::npos);
  auto com = error_of("nodeName: n\nrouterID: 10.0.0.1\nannounce: [{prefix: 203.0.113.0/24, communities: ['70000:1']}]\n");
  CHECK(com.find("key 'announce[0].communities[0]'") != std::string::npos);
}

TEST_CASE("a missing file is an error naming it") {
  auto r = load_config("/nonexistent/tabby.yaml");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "/nonexistent/tabby.yaml: cannot open the config file");
}

TEST_CASE("datastore, metrics and dataplane settings") {
  auto r = parse_config(R"(
nodeName: node-a
metricsAddress: 127.0.0.1:9091
datastore: {type: etcd, etcdEndpoints: [http://127.0.0.1:2379, http://127.0.0.2:2379], etcdPrefix: /x/}
dataplane: {enabled: true, policy: false, vxlanInterface: vxlan.calico, vxlanVNI: 5000, vxlanPort: 8472, mtu: 9000}
)", "node.yaml");
  REQUIRE(r.ok());
  CHECK_FALSE(r->router_id_given);  // from the Node resource
  REQUIRE(r->datastore.has_value());
  CHECK(r->datastore->type == DatastoreConfig::Type::Etcd);
  CHECK(r->datastore->etcd_endpoints.size() == 2);
  CHECK(r->datastore->etcd_prefix == "/x/");
  CHECK(r->metrics_address == "127.0.0.1:9091");
  CHECK(r->dataplane.enabled);
  CHECK(r->dataplane_enabled);
  CHECK_FALSE(r->dataplane.policy);
  CHECK(r->dataplane.vxlan_interface == "vxlan.calico");
  CHECK(r->dataplane.vxlan_vni == 5000);
  CHECK(r->dataplane.vxlan_port == 8472);
  CHECK(r->dataplane.mtu == 9000);

  auto f = parse_config("nodeName: n\ndatastore: {type: file, directory: /srv/m}\n", "node.yaml");
  REQUIRE(f.ok());
  CHECK(f->datastore->type == DatastoreConfig::Type::File);
  CHECK(f->datastore->directory == "/srv/m");
}

TEST_CASE("datastore errors name the key") {
  CHECK(error_of("nodeName: n\n") ==
        "node.yaml: key 'routerID': is required without a datastore (an IPv4 address unique among peers; with a "
        "datastore it defaults to the Node resource's spec.bgp.ipv4Address)");
  CHECK(error_of("nodeName: n\ndatastore: {type: consul}\n") ==
        "node.yaml: key 'datastore.type': must be file, etcd or kubernetes (got 'consul')");
  CHECK(error_of("nodeName: n\ndatastore: {type: file}\n") ==
        "node.yaml: key 'datastore.directory': is required for type file (the directory of manifests)");
  CHECK(error_of("nodeName: n\ndatastore: {type: file, directory: /d, etcdPrefix: /x}\n") ==
        "node.yaml: key 'datastore.etcdPrefix': applies only to type etcd");
  CHECK(error_of("nodeName: n\ndatastore: {type: etcd, etcdEndpoints: [127.0.0.1:2379]}\n") ==
        "node.yaml: key 'datastore.etcdEndpoints[0]': must be a URL like http://127.0.0.1:2379 (got '127.0.0.1:2379')");
  CHECK(error_of("nodeName: n\nrouterID: 1.2.3.4\nmetricsAddress: localhost\n") ==
        "node.yaml: key 'metricsAddress': must be HOST:PORT like 127.0.0.1:9091 (got 'localhost')");
  CHECK(error_of("nodeName: n\nrouterID: 1.2.3.4\ndataplane: {vxlanInterface: a-very-long-interface-name}\n") ==
        "node.yaml: key 'dataplane.vxlanInterface': must be an interface name of 1 to 15 characters without '/' or "
        "spaces");
}

TEST_CASE("config: nodeName and routerID from the environment when the file leaves them out (a DaemonSet's one file)") {
  const std::string ds = "datastore: {type: file, directory: /tmp}\n";
  ConfigEnvironment env{"k8s-node-3", "host-3", "198.18.0.13"};
  auto r = parse_config(ds, "node.yaml", env);
  REQUIRE(r);
  CHECK(r->node_name == "k8s-node-3");  // $NODENAME before the hostname
  CHECK_FALSE(r->node_name_given);
  CHECK(r->router_id_given);
  CHECK(r->bgp.router_id.str() == "198.18.0.13");
  r = parse_config(ds, "node.yaml", ConfigEnvironment{"", "host-3", ""});
  REQUIRE(r);
  CHECK(r->node_name == "host-3");
  CHECK_FALSE(r->router_id_given);  // with a datastore: from the Node resource
  // The file wins over the environment.
  r = parse_config("nodeName: n1\nrouterID: 10.0.0.1\n" + ds, "node.yaml", env);
  REQUIRE(r);
  CHECK(r->node_name == "n1");
  CHECK(r->node_name_given);
  CHECK(r->bgp.router_id.str() == "10.0.0.1");
  // A bad $IP is named.
  r = parse_config(ds, "node.yaml", ConfigEnvironment{"n", "", "eth0"});
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "node.yaml: key 'routerID': not set, and $IP ('eth0') is not an IPv4 address");
}

TEST_CASE("config: the node name file the agent leaves for the CNI plugin") {
  std::string path = "/tmp/tabby-config-test-" + std::to_string(::getpid()) + ".sock";
  CHECK(node_name_file(path) == path + ".nodename");
  CHECK(read_node_name_file(node_name_file(path)).empty());  // absent
  REQUIRE(write_node_name_file(node_name_file(path), "k8s-node-3"));
  CHECK(read_node_name_file(node_name_file(path)) == "k8s-node-3");
  std::remove(node_name_file(path).c_str());
}

TEST_CASE("passwordFile: the first line of the named file, read through the environment's reader") {
  const std::string yaml = "nodeName: n\nrouterID: 10.0.0.1\npeers: [{peerIP: 10.0.0.2, asNumber: 1, passwordFile: /k}]\n";
  ConfigEnvironment env;
  env.read_file = [](const std::string& path) -> std::optional<std::string> {
    if (path == "/k") return std::string("s3cret\r\nsecond line\n");
    return std::nullopt;
  };
  auto r = parse_config(yaml, "node.yaml", env);
  REQUIRE(r.ok());
  CHECK(r->bgp.peers[0].password == "s3cret");
  // Without a reader (or when the reader fails) the file is unreadable: an error naming the key.
  auto bad = parse_config(yaml, "node.yaml");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message == "node.yaml: key 'peers[0].passwordFile': cannot read password file '/k'");
  env.read_file = [](const std::string&) -> std::optional<std::string> { return std::string("\n"); };
  auto empty = parse_config(yaml, "node.yaml", env);
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.error().message == "node.yaml: key 'peers[0].passwordFile': password file '/k' is empty");
}

TEST_CASE("tcpAO: master key tuples, the current key, and the errors that name the field") {
  auto peer = [](const std::string& ao) {
    return parse_config("nodeName: n\nrouterID: 10.0.0.1\npeers: [{peerIP: 10.0.0.2, asNumber: 1, tcpAO: " + ao + "}]\n",
                        "node.yaml");
  };
  auto r = peer("{keys: [{sendId: 1, secret: one}, {sendId: 2, recvId: 7, secret: two, algorithm: aes-128-cmac-96}], "
                "currentKey: 2}");
  REQUIRE(r.ok());
  const auto& ao = r->bgp.peers[0].tcp_ao;
  REQUIRE(ao.keys.size() == 2);
  CHECK(ao.keys[0].send_id == 1);
  CHECK(ao.keys[0].recv_id == 1);  // recvId defaults to sendId
  CHECK(ao.keys[0].algorithm == "hmac(sha1)");
  CHECK(ao.keys[1].recv_id == 7);
  CHECK(ao.keys[1].algorithm == "cmac(aes128)");
  CHECK(ao.current == 2);
  CHECK(ao.current_key() == &ao.keys[1]);
  // Without currentKey the first key signs.
  auto first = peer("{keys: [{sendId: 5, secret: s}, {sendId: 6, secret: t}]}");
  REQUIRE(first.ok());
  CHECK(first->bgp.peers[0].tcp_ao.current == 5);

  auto err = [&](const std::string& ao) {
    auto e = peer(ao);
    REQUIRE_FALSE(e.ok());
    return e.error().message;
  };
  CHECK(err("{keys: []}") == "node.yaml: key 'peers[0].tcpAO.keys': needs at least one key");
  CHECK(err("{keys: [{sendId: 1}]}") == "node.yaml: key 'peers[0].tcpAO.keys[0]': needs secret or secretFile");
  CHECK(err("{keys: [{sendId: 300, secret: s}]}").find("peers[0].tcpAO.keys[0].sendId") != std::string::npos);
  CHECK(err("{keys: [{sendId: 1, secret: s}, {sendId: 1, recvId: 2, secret: t}]}") ==
        "node.yaml: key 'peers[0].tcpAO.keys[1].sendId': sendId 1 is used twice");
  CHECK(err("{keys: [{sendId: 1, secret: s, algorithm: md5}]}") ==
        "node.yaml: key 'peers[0].tcpAO.keys[0].algorithm': must be hmac-sha-1-96, aes-128-cmac-96 or hmac-sha-256 "
        "(got 'md5')");
  CHECK(err("{keys: [{sendId: 1, secret: s}], currentKey: 9}") ==
        "node.yaml: key 'peers[0].tcpAO.currentKey': names no key's sendId");
  CHECK(err("{keys: [{sendId: 1, secret: s}], window: 3}").find("window") != std::string::npos);
  // MD5 and TCP-AO on one peer: refused.
  auto both = parse_config(
      "nodeName: n\nrouterID: 10.0.0.1\npeers: [{peerIP: 10.0.0.2, asNumber: 1, password: p, "
      "tcpAO: {keys: [{sendId: 1, secret: s}]}}]\n",
      "node.yaml");
  REQUIRE_FALSE(both.ok());
  CHECK(both.error().message ==
        "node.yaml: key 'peers[0].tcpAO': give password (TCP MD5) or tcpAO, not both: a connection uses one or the other");
}

TEST_CASE("process_environment reads password files from disk") {
  char path[] = "/tmp/tabby_pwfile_XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "fromdisk\n", 9) == 9);
  ::close(fd);
  auto r = parse_config("nodeName: n\nrouterID: 10.0.0.1\npeers: [{peerIP: 10.0.0.2, asNumber: 1, passwordFile: " +
                            std::string(path) + "}]\n",
                        "node.yaml", process_environment());
  std::remove(path);
  REQUIRE(r.ok());
  CHECK(r->bgp.peers[0].password == "fromdisk");
}

TEST_CASE("peers: bfd {enabled, minRx, minTx, multiplier}; authentication refused; bad values named") {
  auto r = parse_config("nodeName: n\nrouterID: 10.0.0.1\npeers:\n"
                        "  - {peerIP: 10.0.0.2, asNumber: 1, bfd: {minRx: 100, minTx: 150, multiplier: 5}}\n"
                        "  - {peerIP: 10.0.0.3, asNumber: 1, bfd: {enabled: false}}\n"
                        "  - {peerIP: 10.0.0.4, asNumber: 1}\n",
                        "node.yaml");
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
  const auto& p = r->bgp.peers;
  REQUIRE(p.size() == 3);
  CHECK(p[0].bfd.enabled);  // a bfd block turns it on unless enabled: false
  CHECK(p[0].bfd.min_rx_ms == 100);
  CHECK(p[0].bfd.min_tx_ms == 150);
  CHECK(p[0].bfd.multiplier == 5);
  CHECK_FALSE(p[1].bfd.enabled);
  CHECK_FALSE(p[2].bfd.enabled);
  CHECK(p[2].bfd.min_rx_ms == 300);
  auto peer = [](const std::string& bfd) {
    return error_of("nodeName: n\nrouterID: 10.0.0.1\npeers: [{peerIP: 10.0.0.2, asNumber: 1, bfd: " + bfd + "}]\n");
  };
  auto auth = peer("{authentication: {type: md5, key: x}}");
  CHECK(auth.find("peers[0].bfd.authentication") != std::string::npos);
  CHECK(auth.find("BFD authentication is not supported") != std::string::npos);
  CHECK(peer("{multiplier: 0}").find("peers[0].bfd.multiplier") != std::string::npos);
  CHECK(peer("{minRx: 0}").find("peers[0].bfd.minRx") != std::string::npos);
  CHECK(peer("{minTx: 70000}").find("peers[0].bfd.minTx") != std::string::npos);
  CHECK(peer("{echo: true}").find("peers[0].bfd") != std::string::npos);
}

TEST_CASE("ipamGC: defaults, values and errors naming the key") {
  auto d = parse_config("nodeName: n\ndatastore: {type: file, directory: /srv/m}\n", "node.yaml");
  REQUIRE(d);
  CHECK(d->ipam_gc.enabled);
  CHECK(d->ipam_gc.grace_period_s == 900);
  auto r = parse_config("nodeName: n\nrouterID: 10.0.0.1\nipamGC: {enabled: false, gracePeriod: 3, interval: 0.5, leaseDuration: 2}\n",
                        "node.yaml");
  REQUIRE(r);
  CHECK_FALSE(r->ipam_gc.enabled);
  CHECK(r->ipam_gc.grace_period_s == 3);
  CHECK(r->ipam_gc.interval_s == 0.5);
  CHECK(r->ipam_gc.lease_duration_s == 2);
  auto e = parse_config("nodeName: n\nrouterID: 10.0.0.1\nipamGC: {interval: 10, leaseDuration: 15}\n", "node.yaml");
  REQUIRE_FALSE(e);
  CHECK(e.error().message.find("ipamGC.leaseDuration") != std::string::npos);
  e = parse_config("nodeName: n\nrouterID: 10.0.0.1\nipamGC: {grace: 3}\n", "node.yaml");
  REQUIRE_FALSE(e);
  CHECK(e.error().message.find("grace") != std::string::npos);
  e = parse_config("nodeName: n\nrouterID: 10.0.0.1\nipamGC: {gracePeriod: soon}\n", "node.yaml");
  REQUIRE_FALSE(e);
  CHECK(e.error().message.find("ipamGC.gracePeriod") != std::string::npos);
}

TEST_CASE("peer filters: import/export rule lists, enforceFirstAS, maxPrefixes") {
  auto r = parse_config(R"(nodeName: n
routerID: 10.0.0.1
peers:
  - peerIP: 198.18.0.254
    asNumber: 65001
    maxPrefixes: 100
    maxPrefixesRestart: 30
    enforceFirstAS: false
    import:
      - {action: Accept, matchOperator: Equal, cidr: 0.0.0.0/0}
      - {action: Reject, communities: ['65001:666'], originAS: [65010]}
      - {action: Accept, asPathRegex: '^65001_', family: ipv6}
      - {action: Reject}
    export:
      - {action: Reject, matchOperator: In, cidr: 198.19.0.0/16, prefixLength: {min: 26, max: 32}}
  - peerIP: 198.18.0.253
    asNumber: 65001
    export: {prefixes: [198.19.0.0/16], rules: [{action: Reject, source: RemotePeers}]}
)",
                        "node.yaml");
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
  const auto& p = r->bgp.peers[0];
  CHECK(p.max_prefixes == 100);
  CHECK(p.max_prefixes_restart == 30);
  CHECK(p.enforce_first_as == false);
  REQUIRE(p.import_filter.rules.size() == 4);
  CHECK(p.import_filter.rules[0].v4);
  CHECK_FALSE(p.import_filter.rules[0].v6);
  CHECK(p.import_filter.rules[1].communities == std::vector<uint32_t>{65001u << 16 | 666});
  CHECK(p.import_filter.rules[1].origin_as == std::vector<uint32_t>{65010});
  CHECK(p.import_filter.rules[2].as_path_regex->text == "^65001_");
  CHECK_FALSE(p.import_filter.rules[2].v4);
  CHECK(p.import_filter.rule_names[3] == "peers[0].import[3]");
  REQUIRE(p.export_filter.rules.rules.size() == 1);
  CHECK(*p.export_filter.rules.rules[0].min_len == 26);
  const auto& q = r->bgp.peers[1];
  CHECK(q.export_filter.allowed_prefixes.size() == 1);
  REQUIRE(q.export_filter.rules.rules.size() == 1);
  CHECK(q.export_filter.rules.rules[0].remote_peers_only);
  CHECK_FALSE(q.enforce_first_as.has_value());  // default: on for eBGP (the speaker decides)

  auto peer = [](const std::string& keys) {
    return error_of("nodeName: n\nrouterID: 10.0.0.1\npeers: [{peerIP: 10.0.0.2, asNumber: 1, " + keys + "}]\n");
  };
  CHECK(peer("import: [{action: Allow}]").find("key 'peers[0].import[0].action': must be Accept or Reject") !=
        std::string::npos);
  CHECK(peer("import: [{action: Accept, cidr: 10.0.0.0/8}]")
            .find("key 'peers[0].import[0].matchOperator': cidr and matchOperator go together") != std::string::npos);
  CHECK(peer("import: [{action: Accept, asPathRegex: '(x'}]").find("key 'peers[0].import[0].asPathRegex'") !=
        std::string::npos);
  CHECK(peer("import: [{action: Accept, interface: eth0}]").find("key 'peers[0].import[0].interface'") !=
        std::string::npos);
  CHECK(peer("import: [{action: Accept, matchOperator: Equal, cidr: 10.0.0.0/8, prefixLength: {max: 24}}]")
            .find("prefixLength applies only with matchOperator In or NotIn") != std::string::npos);
  CHECK(peer("maxPrefixesRestart: 5").find("key 'peers[0].maxPrefixesRestart': needs maxPrefixes") !=
        std::string::npos);
}

TEST_CASE("dataplane failsafe ports: Calico's FelixConfiguration forms, defaults when unset, errors naming the key") {
  const std::string head = "nodeName: n\nrouterID: 1.2.3.4\n";
  auto r = parse_config(head + "dataplane: {enabled: true}\n", "node.yaml");
  REQUIRE(r);
  CHECK_FALSE(r->dataplane.failsafe_inbound);  // unset: Calico's defaults (the runtime fills them)
  CHECK_FALSE(r->dataplane.failsafe_outbound);
  r = parse_config(head + "dataplane:\n  failsafeInboundHostPorts: [{protocol: TCP, port: 22}, "
                          "{protocol: udp, port: 68, net: 10.0.0.0/8}, \"tcp:2222\", 6443]\n"
                          "  failsafeOutboundHostPorts: []\n",
                   "node.yaml");
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  REQUIRE(r->dataplane.failsafe_inbound);
  const auto& in = *r->dataplane.failsafe_inbound;
  REQUIRE(in.size() == 4);
  CHECK(in[0] == FailsafePortSetting{6, 22, {}});
  CHECK(in[1] == FailsafePortSetting{17, 68, Prefix::parse("10.0.0.0/8").value()});
  CHECK(in[2] == FailsafePortSetting{6, 2222, {}});
  CHECK(in[3] == FailsafePortSetting{6, 6443, {}});  // no protocol: tcp, as Calico
  REQUIRE(r->dataplane.failsafe_outbound);
  CHECK(r->dataplane.failsafe_outbound->empty());  // [] = none
  CHECK(error_of(head + "dataplane: {failsafeInboundHostPorts: [{protocol: ICMP, port: 1}]}\n") ==
        "node.yaml: key 'dataplane.failsafeInboundHostPorts[0].protocol': must be TCP, UDP or SCTP (got 'ICMP')");
  CHECK(error_of(head + "dataplane: {failsafeOutboundHostPorts: [{port: 70000}]}\n") ==
        "node.yaml: key 'dataplane.failsafeOutboundHostPorts[0].port': must be between 1 and 65535 (got 70000)");
  CHECK(error_of(head + "dataplane: {failsafeInboundHostPorts: [{prot: tcp, port: 22}]}\n")
            .find("key 'dataplane.failsafeInboundHostPorts[0].prot': unknown") != std::string::npos);
  CHECK(error_of(head + "dataplane: {failsafeInboundHostPorts: [\"sctp:x\"]}\n")
            .find("key 'dataplane.failsafeInboundHostPorts[0]'") != std::string::npos);
  CHECK(error_of(head + "dataplane: {failsafeInboundHostPorts: tcp:22}\n") ==
        "node.yaml: key 'dataplane.failsafeInboundHostPorts': must be a list");
}

TEST_CASE("dataplane.defaultEndpointToHostAction: Accept by default (Calico's manifests), any case, errors name the key") {
  const std::string head = "nodeName: n\nrouterID: 1.2.3.4\n";
  using E = DataplaneSettings::EndpointToHost;
  auto r = parse_config(head + "dataplane: {enabled: true}\n", "node.yaml");
  REQUIRE(r);
  CHECK(r->dataplane.endpoint_to_host == E::Accept);
  for (auto [text, want] : {std::pair{"Drop", E::Drop}, std::pair{"DROP", E::Drop}, std::pair{"accept", E::Accept},
                            std::pair{"Return", E::Return}, std::pair{"RETURN", E::Return}}) {
    r = parse_config(head + "dataplane: {defaultEndpointToHostAction: " + text + "}\n", "node.yaml");
    REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
    CHECK(r->dataplane.endpoint_to_host == want);
  }
  CHECK(error_of(head + "dataplane: {defaultEndpointToHostAction: Reject}\n") ==
        "node.yaml: key 'dataplane.defaultEndpointToHostAction': must be Drop, Accept or Return (got 'Reject')");
}
