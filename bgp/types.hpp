// types.hpp — BGP value types shared by the codec, FSM, RIBs, reflector and the
// session driver: address families, capabilities, path attributes, messages,
// NOTIFICATION errors, and interned (shared) attribute sets.
// RFC 4271 §4 (messages), §5 (path attributes); RFC 4760 (MP-BGP);
// RFC 5492 (capabilities); RFC 6793 (4-octet AS); RFC 2918/7313 (route refresh);
// RFC 4724 (graceful restart); RFC 9494 (long-lived graceful restart); RFC 8950 (extended next hop); RFC 1997/4360/8092
// (communities); RFC 4456 (ORIGINATOR_ID, CLUSTER_LIST); RFC 7606 (error handling);
// RFC 8203/9003 (shutdown communication).
// Pure: no I/O.
//
// Module bgp (pure core: types, codec, fsm, rib, reflector). Owns: BGP values, the wire
// format, session state machines, the RIBs and best path. May call: base only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "base/base.hpp"

namespace tabby::bgp {

// ---------------------------------------------------------------- families
enum class Afi : uint16_t { Ipv4 = 1, Ipv6 = 2 };
enum class Safi : uint8_t { Unicast = 1 };

struct Family {
  Afi afi = Afi::Ipv4;
  Safi safi = Safi::Unicast;
  auto operator<=>(const Family&) const = default;
  bool operator==(const Family&) const = default;
};
inline constexpr Family kIpv4Unicast{Afi::Ipv4, Safi::Unicast};
inline constexpr Family kIpv6Unicast{Afi::Ipv6, Safi::Unicast};
std::string family_name(Family f);  // "ipv4-unicast"

// ---------------------------------------------------------------- errors
// RFC 4271 §4.5 error codes.
enum class ErrorCode : uint8_t {
  MessageHeader = 1,
  OpenMessage = 2,
  UpdateMessage = 3,
  HoldTimerExpired = 4,
  FsmError = 5,
  Cease = 6,
  RouteRefresh = 7,  // RFC 7313
};
namespace header_sub {  // §6.1
inline constexpr uint8_t ConnectionNotSynchronized = 1, BadMessageLength = 2, BadMessageType = 3;
}
namespace open_sub {  // §6.2, RFC 5492, RFC 4271
inline constexpr uint8_t UnsupportedVersion = 1, BadPeerAs = 2, BadBgpId = 3,
                         UnsupportedOptionalParameter = 4, UnacceptableHoldTime = 6,
                         UnsupportedCapability = 7, RoleMismatch = 11;
}
namespace update_sub {  // §6.3
inline constexpr uint8_t MalformedAttributeList = 1, UnrecognizedWellKnown = 2,
                         MissingWellKnown = 3, AttributeFlagsError = 4, AttributeLengthError = 5,
                         InvalidOrigin = 6, InvalidNextHop = 8, OptionalAttributeError = 9,
                         InvalidNetworkField = 10, MalformedAsPath = 11;
}
namespace cease_sub {  // RFC 4486
inline constexpr uint8_t MaxPrefixes = 1, AdministrativeShutdown = 2, PeerDeconfigured = 3,
                         AdministrativeReset = 4, ConnectionRejected = 5,
                         OtherConfigurationChange = 6, ConnectionCollisionResolution = 7,
                         OutOfResources = 8, HardReset = 9;  // RFC 8538
}

// A protocol error ready to go out as a NOTIFICATION (code, subcode, data),
// with a human-readable reason for logs and `tabby status`.
struct NotifyError {
  uint8_t code = 0;
  uint8_t subcode = 0;
  std::vector<uint8_t> data;
  std::string reason;
};

// RFC 7606 §2: how an UPDATE error is handled, mildest last.
enum class ErrorAction : uint8_t {
  SessionReset,      // send NOTIFICATION, drop the session
  AfiSafiDisable,    // (RFC 7606 §2; we fall back to SessionReset)
  TreatAsWithdraw,   // every NLRI in the UPDATE is withdrawn
  AttributeDiscard,  // the bad attribute is dropped, the rest is used
};

// ---------------------------------------------------------------- capabilities
struct GracefulRestartCapability {  // RFC 4724 §3
  bool restart_state = false;       // R bit
  bool notification = false;        // N bit (RFC 8538)
  uint16_t restart_time = 0;        // seconds, 12 bits
  struct FamilyFlags {
    Family family;
    bool forwarding_preserved = false;  // F bit
    bool operator==(const FamilyFlags&) const = default;
  };
  std::vector<FamilyFlags> families;
  bool operator==(const GracefulRestartCapability&) const = default;
};

// RFC 9494 §3: the Long-Lived Graceful Restart capability (code 71): per
// family, the F bit and the long-lived stale time (seconds, 24 bits).
struct LongLivedGracefulRestartCapability {
  struct FamilyTime {
    Family family;
    bool forwarding_preserved = false;  // F bit
    uint32_t stale_time = 0;            // seconds, 24 bits
    bool operator==(const FamilyTime&) const = default;
  };
  std::vector<FamilyTime> families;
  bool operator==(const LongLivedGracefulRestartCapability&) const = default;
};

struct ExtendedNextHopEntry {  // RFC 8950 §3
  Family nlri;
  Afi next_hop_afi = Afi::Ipv6;
  bool operator==(const ExtendedNextHopEntry&) const = default;
};

struct UnknownCapability {
  uint8_t code = 0;
  std::vector<uint8_t> value;
  bool operator==(const UnknownCapability&) const = default;
};

struct Capabilities {
  std::vector<Family> multiprotocol;             // code 1
  bool route_refresh = false;                    // code 2
  std::vector<ExtendedNextHopEntry> extended_next_hop;  // code 5
  std::optional<GracefulRestartCapability> graceful_restart;  // code 64
  std::optional<uint32_t> four_octet_as;         // code 65
  bool enhanced_route_refresh = false;           // code 70
  std::optional<LongLivedGracefulRestartCapability> long_lived_graceful_restart{};  // code 71
  std::vector<UnknownCapability> unknown;        // kept for logging, never echoed
  bool operator==(const Capabilities&) const = default;
};

// ---------------------------------------------------------------- attributes
enum class Origin : uint8_t { Igp = 0, Egp = 1, Incomplete = 2 };

struct AsPathSegment {
  enum class Type : uint8_t { Set = 1, Sequence = 2, ConfedSequence = 3, ConfedSet = 4 };
  Type type = Type::Sequence;
  std::vector<uint32_t> asns;
  bool operator==(const AsPathSegment&) const = default;
};
using AsPath = std::vector<AsPathSegment>;

// RFC 4271 §9.1.2.2(a): a SET counts 1, confederation segments count 0.
uint32_t as_path_length(const AsPath& path);
// The first AS of the leftmost SEQUENCE (the neighbour AS for eBGP), if any.
std::optional<uint32_t> as_path_first(const AsPath& path);
bool as_path_contains(const AsPath& path, uint32_t asn);
std::string as_path_str(const AsPath& path);  // "64512 64513 {1 2}"

struct Aggregator {
  uint32_t asn = 0;
  IpAddress address;  // always IPv4
  bool operator==(const Aggregator&) const = default;
};

struct LargeCommunity {  // RFC 8092
  uint32_t global = 0, local1 = 0, local2 = 0;
  auto operator<=>(const LargeCommunity&) const = default;
  bool operator==(const LargeCommunity&) const = default;
};

// Well-known communities, RFC 1997 / RFC 7999 / RFC 8326.
inline constexpr uint32_t kNoExport = 0xFFFFFF01, kNoAdvertise = 0xFFFFFF02,
                          kNoExportSubconfed = 0xFFFFFF03, kBlackhole = 0xFFFF029A,
                          kGracefulShutdown = 0xFFFF0000,
                          kLlgrStale = 0xFFFF0006, kNoLlgr = 0xFFFF0007;  // RFC 9494 §6

// Community text as users write it in config files and resources (types.cpp):
// "64512:100" or a well-known name (no-export, no-advertise, no-export-subconfed,
// blackhole, graceful-shutdown, llgr-stale, no-llgr); large communities as "A:B:C" (RFC 8092 §3).
Result<uint32_t> parse_community(const std::string& text);
Result<LargeCommunity> parse_large_community(const std::string& text);
std::string community_str(uint32_t c);  // "ASN:VALUE"
std::string large_community_str(const LargeCommunity& c);

struct UnknownAttribute {  // optional transitive attributes are passed on (RFC 4271 §5)
  uint8_t flags = 0;       // as received; the Partial bit is set when passed on
  uint8_t type = 0;
  std::vector<uint8_t> value;
  bool operator==(const UnknownAttribute&) const = default;
};

// Attribute type codes.
namespace attr {
inline constexpr uint8_t Origin = 1, AsPath = 2, NextHop = 3, Med = 4, LocalPref = 5,
                         AtomicAggregate = 6, Aggregator = 7, Communities = 8,
                         OriginatorId = 9, ClusterList = 10, MpReach = 14, MpUnreach = 15,
                         ExtCommunities = 16, As4Path = 17, As4Aggregator = 18,
                         LargeCommunities = 32;
}
namespace attr_flag {
inline constexpr uint8_t Optional = 0x80, Transitive = 0x40, Partial = 0x20, ExtendedLength = 0x10;
}

// The path attributes of one route, after AS4_PATH/AS4_AGGREGATOR have been
// merged into as_path/aggregator (RFC 6793 §4.2.3). The next hop lives here
// for every family: the NEXT_HOP attribute for IPv4 NLRI, the MP_REACH next
// hop (global, then optional link-local) for MP families.
struct PathAttributes {
  Origin origin = Origin::Igp;
  AsPath as_path;
  IpAddress next_hop;                          // unspecified = none
  std::optional<IpAddress> link_local_next_hop;  // IPv6 MP_REACH second address
  std::optional<uint32_t> med;
  std::optional<uint32_t> local_pref;
  bool atomic_aggregate = false;
  std::optional<Aggregator> aggregator;
  std::vector<uint32_t> communities;           // kept in received order
  std::vector<uint64_t> ext_communities;       // 8 bytes each, big-endian packed
  std::vector<LargeCommunity> large_communities;
  std::optional<IpAddress> originator_id;      // RFC 4456 (IPv4 router ID)
  std::vector<uint32_t> cluster_list;          // RFC 4456
  std::vector<UnknownAttribute> unknown;
  bool operator==(const PathAttributes&) const = default;
};
size_t hash_value(const PathAttributes& a);

// An interned, immutable attribute set: equal sets share one object
// (BIRD's attribute cache). Reference-counted without atomics: the speaker is
// single-threaded. Copying an AttrRef is one increment.
class AttrStore;
struct AttrNode {
  PathAttributes attrs;
  size_t hash = 0;
  mutable uint32_t refs = 0;
  uint32_t as_path_len = 0;  // as_path_length(attrs.as_path), for the decision process
  AttrStore* store = nullptr;
  bool llgr_stale = false;   // carries LLGR_STALE (RFC 9494 §4.3: least preferred)
};

class AttrRef {
 public:
  AttrRef() = default;
  explicit AttrRef(const AttrNode* n) : n_(n) { if (n_) ++n_->refs; }
  AttrRef(const AttrRef& o) : n_(o.n_) { if (n_) ++n_->refs; }
  AttrRef(AttrRef&& o) noexcept : n_(o.n_) { o.n_ = nullptr; }
  AttrRef& operator=(AttrRef o) noexcept { std::swap(n_, o.n_); return *this; }
  ~AttrRef() { release(); }

  const PathAttributes& operator*() const { return n_->attrs; }
  const PathAttributes* operator->() const { return &n_->attrs; }
  const PathAttributes* get() const { return n_ ? &n_->attrs : nullptr; }
  explicit operator bool() const { return n_ != nullptr; }
  // Interned sets compare by identity.
  bool operator==(const AttrRef& o) const { return n_ == o.n_; }
  size_t hash() const { return n_ ? n_->hash : 0; }
  const AttrNode* node() const { return n_; }

 private:
  void release();
  const AttrNode* n_ = nullptr;
};

// Owns the interned attribute sets; a set is freed when its last AttrRef goes.
// Must outlive every AttrRef it handed out. Implemented in attr_store.cpp.
class AttrStore {
 public:
  AttrStore();
  ~AttrStore();
  AttrStore(const AttrStore&) = delete;
  AttrStore& operator=(const AttrStore&) = delete;
  AttrRef intern(PathAttributes attrs);
  size_t size() const;  // distinct sets alive
  void erase(const AttrNode* n);  // called by AttrRef when refs drops to 0

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

inline void AttrRef::release() {
  if (n_ && --n_->refs == 0) n_->store->erase(n_);
  n_ = nullptr;
}

// ---------------------------------------------------------------- messages
enum class MessageType : uint8_t { Open = 1, Update = 2, Notification = 3, Keepalive = 4,
                                   RouteRefresh = 5 };
inline constexpr size_t kHeaderSize = 19;
inline constexpr size_t kMaxMessageSize = 4096;  // RFC 4271 (no RFC 8654 extended messages)
inline constexpr uint16_t kAsTrans = 23456;       // RFC 6793

struct OpenMessage {
  uint8_t version = 4;
  uint32_t my_as = 0;        // the real AS: 4-octet capability value if present, else the 2-octet field
  uint16_t hold_time = 0;
  IpAddress bgp_id;          // IPv4
  Capabilities caps;
  bool extended_params = false;  // RFC 9072 encoding used (decode: seen; encode: force)
  bool operator==(const OpenMessage&) const = default;
};

struct UpdateMessage {
  std::vector<Prefix> withdrawn;      // IPv4 unicast withdrawn routes field
  std::vector<Prefix> nlri;           // IPv4 unicast NLRI field
  // MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760). The MP next hop is in attrs.
  std::optional<Family> mp_reach_family;
  std::vector<Prefix> mp_reach_nlri;
  std::optional<Family> mp_unreach_family;
  std::vector<Prefix> mp_withdrawn;
  // The attributes, interned (null when the UPDATE carries only withdrawals).
  AttrRef attrs;

  // Filled by the decoder (RFC 7606): when set, every NLRI in this UPDATE must
  // be handled as withdrawn; attrs_discarded lists attributes that were dropped.
  bool treat_as_withdraw = false;
  std::string treat_as_withdraw_reason;
  std::vector<std::string> attrs_discarded;

  bool operator==(const UpdateMessage&) const = default;
};

// End-of-RIB marker (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an UPDATE
// with only an empty MP_UNREACH_NLRI for other families.
UpdateMessage make_end_of_rib(Family f);
std::optional<Family> end_of_rib_family(const UpdateMessage& u);

struct NotificationMessage {
  uint8_t code = 0;
  uint8_t subcode = 0;
  std::vector<uint8_t> data;
  bool operator==(const NotificationMessage&) const = default;
};
// RFC 8203/9003: Cease/AdministrativeShutdown or /AdministrativeReset may carry
// a UTF-8 message of at most 255 bytes, length-prefixed.
NotificationMessage make_shutdown_notification(uint8_t subcode, const std::string& message);
std::optional<std::string> shutdown_message(const NotificationMessage& n);
std::string describe_notification(uint8_t code, uint8_t subcode);  // "Cease/Administrative Shutdown"

struct KeepaliveMessage {
  bool operator==(const KeepaliveMessage&) const = default;
};

struct RouteRefreshMessage {  // RFC 2918, RFC 7313 subtypes
  enum class Subtype : uint8_t { Normal = 0, BeginOfRib = 1, EndOfRib = 2 };
  Family family;
  Subtype subtype = Subtype::Normal;
  bool operator==(const RouteRefreshMessage&) const = default;
};

using Message = std::variant<OpenMessage, UpdateMessage, NotificationMessage, KeepaliveMessage,
                             RouteRefreshMessage>;

// What the codec needs to know of a session (negotiated capabilities).
struct CodecContext {
  bool four_octet_as = true;     // both sides advertised capability 65
  bool ibgp = false;             // RFC 7606: LOCAL_PREF from an eBGP peer is discarded
  bool extended_next_hop_ipv4 = false;  // RFC 8950: IPv4 NLRI may carry an IPv6 next hop
};

// ---------------------------------------------------------------- best routes out
// What a dataplane needs of one Loc-RIB best-route change (the speaker reports
// these; the agent's calculation turns them into kernel routes): the next hops of
// the best path and its ECMP peers, or none when the prefix has no route any more.
struct BestRouteChange {
  Prefix prefix;
  std::vector<IpAddress> next_hops;  // empty = no route any more
  bool local = false;                // originated by this node (an announcement)
  bool operator==(const BestRouteChange&) const = default;
};

}  // namespace tabby::bgp
