// codec.cpp — pure pieces shared by the datastore clients:
// manifests (yaml-cpp), state file names. What a store keeps per delivered
// object (KeyIndex, SyncState, relist diffs) is in datastore_sync.cpp; the
// etcd and Kubernetes wire encodings are in datastore_wire.cpp.
#include "felix/datastore/codec.hpp"
#include "policy/policy.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <utility>

namespace tabby::felix {

std::string to_string(const DocKey& key) {
  return key.kind + " " + (key.ns.empty() ? "" : key.ns + "/") + key.name;
}

std::string qualified_kind(std::string_view api_version, std::string_view kind) {
  auto slash = api_version.find('/');
  if (slash == std::string_view::npos) return std::string(kind);  // core group ("v1")
  std::string_view group = api_version.substr(0, slash);
  if (group == "crd.projectcalico.org") group = "projectcalico.org";
  return std::string(kind) + "." + std::string(group);
}

namespace {

std::string scalar_or_empty(const YAML::Node& n) {
  if (!n || !n.IsScalar()) return {};
  return n.Scalar();
}

// The key of one parsed document, or an error naming the missing field.
Result<DocKey> key_of(const YAML::Node& doc) {
  if (!doc.IsMap()) return fail_msg("document is not a mapping");
  std::string api_version = scalar_or_empty(doc["apiVersion"]);
  std::string kind = scalar_or_empty(doc["kind"]);
  if (api_version.empty()) return fail_msg("missing apiVersion");
  if (kind.empty()) return fail_msg("missing kind");
  YAML::Node meta = doc["metadata"];
  if (!meta || !meta.IsMap()) return fail_msg("missing metadata");
  std::string name = scalar_or_empty(meta["name"]);
  if (name.empty()) return fail_msg("missing metadata.name");
  return DocKey{qualified_kind(api_version, kind), scalar_or_empty(meta["namespace"]), name};
}

std::string yaml_error(const std::string& origin, const YAML::Exception& e) {
  std::string where = origin;
  if (!e.mark.is_null()) where += ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1);
  return where + ": YAML error: " + e.msg;
}

// YAML anchors and aliases share nodes: a few lines can stand for a tree of
// billions of nodes ("billion laughs"), which converting, re-emitting or parsing
// the objects walks in full (and the agent parses each object again). So the
// documents of a text are measured first, aliases expanded, against one budget
// for the whole text: max(kMinNodeBudget, 4 x its size). A document without
// aliases needs about a byte per node, so real manifests stay far below it, and
// the work on the nodes stays linear in the text.
constexpr size_t kMinNodeBudget = 200000;

size_t node_budget(size_t text_size) { return std::max(kMinNodeBudget, 4 * text_size); }

// The walk itself (aliases expanded, depth bounded against alias cycles) is the
// policy module's manifest reader's: policy::yaml_take_nodes.
using policy::kMaxManifestDepth;
using policy::yaml_take_nodes;

std::string too_large(size_t text_size) {
  return "manifest too large: more than " + std::to_string(node_budget(text_size)) +
         " nodes once YAML aliases are expanded, or nested deeper than " + std::to_string(kMaxManifestDepth) +
         " (an alias inside its own anchor)";
}

nlohmann::json yaml_to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json o = nlohmann::json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = yaml_to_json(kv.second);
      return o;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& v : n) a.push_back(yaml_to_json(v));
      return a;
    }
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      if (n.Tag() == "!") return s;  // quoted: always a string
      if (s == "null" || s == "~" || s == "Null" || s == "NULL") return nullptr;
      if (s == "true" || s == "True" || s == "TRUE") return true;
      if (s == "false" || s == "False" || s == "FALSE") return false;
      if (!s.empty()) {
        char* end = nullptr;
        errno = 0;
        long long i = std::strtoll(s.c_str(), &end, 10);
        if (*end == 0 && errno == 0 && (std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-' || s[0] == '+'))
          return i;
        end = nullptr;
        double d = std::strtod(s.c_str(), &end);
        bool numeric_start = std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-' || s[0] == '+' || s[0] == '.';
        if (*end == 0 && numeric_start && s.find_first_of("xXnN") == std::string::npos) return d;
      }
      return s;
    }
    default:
      return nullptr;
  }
}

// Adds the object(s) of one parsed document. `original` is the document's own
// text (kept as the object's text, comments and all); List items are
// re-emitted since they have no text of their own.
void add_document(const YAML::Node& doc, std::string_view original, const std::string& origin, size_t index,
                  std::vector<DocEvent>& out, std::string& error) {
  if (!doc || doc.IsNull()) return;
  std::string kind = doc.IsMap() ? scalar_or_empty(doc["kind"]) : "";
  if (kind.size() >= 4 && kind.compare(kind.size() - 4, 4, "List") == 0 && doc["items"] && doc["items"].IsSequence()) {
    for (const auto& item : doc["items"]) add_document(item, {}, origin, index, out, error);
    return;
  }
  auto key = key_of(doc);
  if (!key) {
    if (error.empty()) error = origin + ": document " + std::to_string(index + 1) + ": " + key.error().message;
    return;
  }
  std::string text;
  if (!original.empty()) {
    text = std::string(original);
    if (text.empty() || text.back() != '\n') text += '\n';
  } else {
    // A List item is written back as YAML. The text must read back as the
    // same object: yaml-cpp's emitter cannot write every string it reads (a
    // name or apiVersion holding invalid UTF-8 or a control character comes
    // back different), and an object filed under a key its own text does not
    // name would confuse every later update of it.
    YAML::Emitter em;
    em << doc;
    if (em.good()) text = std::string(em.c_str()) + "\n";
    auto back = em.good() ? document_key(text) : Result<DocKey>(fail_msg(em.GetLastError()));
    if (!back || *back != *key) {
      if (error.empty())
        error = origin + ": document " + std::to_string(index + 1) + ": List item " + to_string(*key) +
                ": its fields cannot be written back as YAML unchanged (invalid UTF-8 or a control character?)";
      return;
    }
  }
  out.push_back(DocEvent{std::move(*key), std::move(text), "", false, origin});
}

// A line that starts a new document: "---" at column 0, alone or followed by
// a space/tab. (Content can never start at column 0 with "---": block scalars
// are indented and plain scalars cannot begin with "- " or "---".)
bool document_marker(std::string_view line) {
  return line.substr(0, 3) == "---" && (line.size() == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\r');
}

// In a document yaml-cpp read as empty: the first line (0-based, and its text)
// that is neither blank, a comment, a document end marker nor an explicit null.
std::optional<std::pair<size_t, std::string>> stray_content_line(std::string_view body) {
  size_t line = 0;
  for (size_t pos = 0; pos <= body.size(); ++line) {
    size_t nl = body.find('\n', pos);
    std::string_view l = body.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? body.size() + 1 : nl + 1;
    size_t a = l.find_first_not_of(" \t\r");
    if (a == std::string_view::npos || l[a] == '#') continue;
    size_t b = l.find_last_not_of(" \t\r");
    std::string_view t = l.substr(a, b - a + 1);
    if (t == "..." || t == "~" || t == "null" || t == "Null" || t == "NULL") continue;
    return std::make_pair(line, std::string(t.substr(0, 40)));
  }
  return std::nullopt;
}

}  // namespace

Result<DocKey> document_key(std::string_view text) {
  try {
    YAML::Node doc = YAML::Load(std::string(text));
    auto key = key_of(doc);
    if (!key) return fail_msg("manifest: " + key.error().message);
    return key;
  } catch (const YAML::Exception& e) {
    return fail_msg(yaml_error("manifest", e));
  }
}

namespace ds {

Result<std::vector<DocEvent>> parse_manifests(std::string_view text, const std::string& origin) {
  // Split at document markers and parse one document at a time: each object
  // keeps its own text, and a big file never holds all its nodes at once.
  std::vector<DocEvent> out;
  std::string error;
  size_t budget = node_budget(text.size());  // shared by all documents of the text
  size_t index = 0;
  size_t pos = 0, line_no = 0;
  size_t chunk_start = 0, chunk_line = 0;
  auto flush = [&](size_t end) -> Status {
    std::string_view chunk = text.substr(chunk_start, end - chunk_start);
    // The marker line itself is not part of the object's text when it is bare.
    std::string_view body = chunk;
    size_t body_line = chunk_line;
    if (document_marker(body.substr(0, body.find('\n')))) {
      size_t nl = body.find('\n');
      std::string_view marker = body.substr(0, nl);
      while (!marker.empty() && (marker.back() == ' ' || marker.back() == '\t' || marker.back() == '\r'))
        marker.remove_suffix(1);
      if (marker == "---") {
        body = nl == std::string_view::npos ? std::string_view() : body.substr(nl + 1);
        ++body_line;
      }
    }
    if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return {};
    try {
      YAML::Node doc = YAML::Load(std::string(body));
      if (!doc || doc.IsNull()) {
        // An empty document (comments only, or an explicit null) is skipped. But
        // yaml-cpp also returns an empty document, without an error, for a stray
        // top-level ',' or ']': name the first line that is more than a comment.
        if (auto bad = stray_content_line(body))
          return fail_msg(origin + ":" + std::to_string(body_line + bad->first + 1) +
                          ": YAML error: unexpected '" + bad->second + "' (not a YAML document)");
        return {};
      }
      if (!yaml_take_nodes(doc, budget))
        return fail_msg(origin + ":" + std::to_string(body_line + 1) + ": " + too_large(text.size()));
      add_document(doc, body, origin, index++, out, error);
    } catch (const YAML::Exception& e) {
      std::string where = origin;
      if (!e.mark.is_null())
        where += ":" + std::to_string(body_line + size_t(e.mark.line) + 1) + ":" + std::to_string(e.mark.column + 1);
      return fail_msg(where + ": YAML error: " + e.msg);
    }
    return {};
  };
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    size_t end = nl == std::string_view::npos ? text.size() : nl;
    std::string_view line = text.substr(pos, end - pos);
    if (document_marker(line) && pos != chunk_start) {
      if (auto st = flush(pos); !st) return fail(st.error());
      chunk_start = pos;
      chunk_line = line_no;
    }
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
    ++line_no;
  }
  if (auto st = flush(text.size()); !st) return fail(st.error());
  if (!error.empty()) return fail_msg(error);
  std::set<DocKey> seen;
  for (const auto& d : out)
    if (!seen.insert(d.key).second) return fail_msg(origin + ": " + to_string(d.key) + " defined twice");
  return out;
}

Result<std::string> manifest_to_json(std::string_view text) {
  try {
    YAML::Node doc = YAML::Load(std::string(text));
    size_t budget = node_budget(text.size());
    if (!yaml_take_nodes(doc, budget)) return fail_msg(too_large(text.size()));
    return yaml_to_json(doc).dump();
  } catch (const YAML::Exception& e) {
    return fail_msg(yaml_error("manifest", e));
  } catch (const nlohmann::json::type_error& e) {
    // YAML scalars are bytes; JSON (and the Kubernetes API) takes UTF-8 only.
    return fail_msg(std::string("manifest: not valid UTF-8 (JSON needs UTF-8): ") + e.what());
  }
}

Status check_text_key(const DocKey& key, std::string_view text) {
  auto k = document_key(text);
  if (!k) return fail(k.error());
  if (*k != key) return fail_msg("manifest describes " + to_string(*k) + ", not " + to_string(key));
  return {};
}

void apply_events(DocMap& map, const std::vector<DocEvent>& events) {
  for (const auto& e : events) {
    if (e.deleted)
      map.erase(e.key);
    else
      map[e.key] = e;
  }
}

namespace {
void escape_into(std::string& out, std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '.' || c == '-') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
}
std::optional<std::string> unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    auto hexval = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}
}  // namespace

std::string state_file_name(const DocKey& key) {
  std::string out;
  escape_into(out, key.kind);
  out += '_';
  escape_into(out, key.ns);
  out += '_';
  escape_into(out, key.name);
  out += ".yaml";
  return out;
}

std::optional<DocKey> parse_state_file_name(std::string_view file) {
  if (file.size() < 6 || file.substr(file.size() - 5) != ".yaml") return std::nullopt;
  file.remove_suffix(5);
  auto a = file.find('_');
  if (a == std::string_view::npos) return std::nullopt;
  auto b = file.find('_', a + 1);
  if (b == std::string_view::npos || file.find('_', b + 1) != std::string_view::npos) return std::nullopt;
  auto kind = unescape(file.substr(0, a));
  auto ns = unescape(file.substr(a + 1, b - a - 1));
  auto name = unescape(file.substr(b + 1));
  if (!kind || !ns || !name || kind->empty() || name->empty()) return std::nullopt;
  return DocKey{*kind, *ns, *name};
}

}  // namespace ds
}  // namespace tabby::felix
