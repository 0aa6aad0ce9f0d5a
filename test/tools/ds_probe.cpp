// ds_probe.cpp — tabby-ds-probe: runs one datastore client (felix/datastore/datastore.hpp)
// for the integration tests. `watch` prints every update as one JSON line on
// stdout (flushed); `create`/`put`/`replace`/`remove`/`remove-if` perform one write
// and print its outcome as JSON (`replace`, `remove-if`: compare-and-swap /
// compare-and-delete against the version whose text is in CURRENT and whose
// revision is REV, as a watch delivered it). Usage:
//   tabby-ds-probe --type file --dir D [--debounce-ms N] CMD ...
//   (any type: --part-size N delivers the initial listing as snapshot_part updates)
//   tabby-ds-probe --type etcd --endpoints URL[,URL] [--prefix P] CMD ...
//   tabby-ds-probe --type kubernetes --server URL --token F --ca F [--resources plural[.group],...] [--page-size N] CMD ...
//   CMD: watch [--for SECONDS] | create KIND NS NAME FILE | put KIND NS NAME FILE | remove KIND NS NAME
//        | replace KIND NS NAME FILE CURRENT REV | remove-if KIND NS NAME CURRENT REV
//   (NS "-" = cluster-scoped; FILE "-" = stdin; common: --backoff-min-ms, --backoff-max-ms)
#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "felix/datastore/datastore.hpp"

using namespace tabby;
using namespace tabby::felix;
using json = nlohmann::json;

namespace {

int usage(const std::string& why) {
  std::cerr << "tabby-ds-probe: " << why << "\n";
  return 2;
}

json event_json(const DocEvent& e) {
  return {{"kind", e.key.kind}, {"ns", e.key.ns},         {"name", e.key.name},
          {"text", e.text},     {"revision", e.revision}, {"deleted", e.deleted}};
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, sep);)
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  DatastoreConfig cfg;
  std::string resources;
  size_t i = 0;
  auto value = [&](const std::string& flag) -> std::string {
    if (i + 1 >= args.size()) {
      std::cerr << "tabby-ds-probe: " << flag << " needs a value\n";
      std::exit(2);
    }
    return args[++i];
  };
  for (; i < args.size() && args[i].rfind("--", 0) == 0; ++i) {
    const std::string& a = args[i];
    if (a == "--type") {
      std::string t = value(a);
      if (t == "file") cfg.type = DatastoreConfig::Type::File;
      else if (t == "etcd") cfg.type = DatastoreConfig::Type::Etcd;
      else if (t == "kubernetes") cfg.type = DatastoreConfig::Type::Kubernetes;
      else return usage("unknown type " + t);
    } else if (a == "--dir") cfg.directory = value(a);
    else if (a == "--debounce-ms") cfg.debounce_ms = std::stoi(value(a));
    else if (a == "--part-size") cfg.snapshot_part_size = std::stoul(value(a));
    else if (a == "--endpoints") cfg.etcd_endpoints = split(value(a), ',');
    else if (a == "--prefix") cfg.etcd_prefix = value(a);
    else if (a == "--server") cfg.k8s_server = value(a);
    else if (a == "--token") cfg.k8s_token_file = value(a);
    else if (a == "--ca") cfg.k8s_ca_file = value(a);
    else if (a == "--resources") resources = value(a);
    else if (a == "--page-size") cfg.k8s_page_size = std::stoi(value(a));
    else if (a == "--watch-timeout-s") cfg.k8s_watch_timeout_s = std::stoi(value(a));
    else if (a == "--backoff-min-ms") cfg.backoff_min_ms = std::stoi(value(a));
    else if (a == "--backoff-max-ms") cfg.backoff_max_ms = std::stoi(value(a));
    else return usage("unknown flag " + a);
  }
  if (!resources.empty()) {
    std::vector<K8sResource> chosen;
    for (const auto& want : split(resources, ',')) {
      bool found = false;
      for (const auto& r : default_k8s_resources()) {
        std::string id = r.group.empty() ? r.plural : r.plural + "." + r.group;
        if (id == want) {
          chosen.push_back(r);
          found = true;
        }
      }
      if (!found) return usage("unknown resource " + want);
    }
    cfg.k8s_resources = chosen;
  }
  if (i >= args.size()) return usage("no command");
  std::string cmd = args[i++];
  std::vector<std::string> rest(args.begin() + long(i), args.end());

  boost::asio::io_context io;
  auto made = make_datastore(io, cfg);
  if (!made) {
    std::cout << json{{"error", made.error().message}}.dump() << std::endl;
    return 1;
  }
  auto store = std::move(*made);
  int rc = 0;

  if (cmd == "watch") {
    double seconds = 0;
    if (rest.size() == 2 && rest[0] == "--for") seconds = std::stod(rest[1]);
    boost::asio::signal_set signals(io, SIGTERM, SIGINT);
    boost::asio::steady_timer deadline(io);
    auto st = store->start([&](const DatastoreUpdate& u) {
      json j;
      switch (u.type) {
        case DatastoreUpdate::Type::Snapshot: j["type"] = "snapshot"; break;
        case DatastoreUpdate::Type::SnapshotPart: j["type"] = "snapshot_part"; break;
        case DatastoreUpdate::Type::Changes: j["type"] = "changes"; break;
        case DatastoreUpdate::Type::Problem: j["type"] = "problem"; break;
        case DatastoreUpdate::Type::Connection: j["type"] = "connection"; j["connected"] = u.connected; break;
      }
      j["events"] = json::array();
      for (const auto& e : u.events) j["events"].push_back(event_json(e));
      j["message"] = u.message;
      if (u.type == DatastoreUpdate::Type::Problem) j["source"] = u.source;
      std::cout << j.dump() << std::endl;
    });
    if (!st) {
      std::cout << json{{"error", st.error().message}}.dump() << std::endl;
      return 1;
    }
    auto finish = [&] {
      store->stop();
      signals.cancel();
      deadline.cancel();
    };
    signals.async_wait([&](boost::system::error_code ec, int) { if (!ec) finish(); });
    if (seconds > 0) {
      deadline.expires_after(std::chrono::milliseconds(long(seconds * 1000)));
      deadline.async_wait([&](boost::system::error_code ec) { if (!ec) finish(); });
    }
    io.run();
    return 0;
  }

  if (rest.size() < 3) return usage(cmd + " needs KIND NS NAME");
  DocKey key{rest[0], rest[1] == "-" ? "" : rest[1], rest[2]};
  std::string text;
  DocEvent current;
  if (cmd == "replace" || cmd == "remove-if") {
    const size_t at = cmd == "replace" ? 4 : 3;  // CURRENT's position
    if (rest.size() < at + 2) return usage(cmd + " needs " + (cmd == "replace" ? "FILE " : "") + "CURRENT REV");
    std::ifstream in(rest[at]);
    if (!in) return usage("cannot read " + rest[at]);
    std::stringstream ss;
    ss << in.rdbuf();
    current.key = key;
    current.text = ss.str();
    current.revision = rest[at + 1];
  }
  if (cmd == "create" || cmd == "put" || cmd == "replace") {
    if (rest.size() < 4) return usage(cmd + " needs a FILE");
    std::stringstream ss;
    if (rest[3] == "-") {
      ss << std::cin.rdbuf();
    } else {
      std::ifstream in(rest[3]);
      if (!in) return usage("cannot read " + rest[3]);
      ss << in.rdbuf();
    }
    text = ss.str();
  }
  auto print = [&](const char* op, bool ok, const std::string& err, json result) {
    json j{{"op", op}, {"ok", ok}};
    if (ok) j["result"] = result;
    else j["error"] = err;
    std::cout << j.dump() << std::endl;
    rc = ok ? 0 : 1;
  };
  if (cmd == "create") {
    store->create(key, text, [&](Result<bool> r) { print("create", r.ok(), r ? "" : r.error().message, r ? json(*r) : json()); });
  } else if (cmd == "put") {
    store->put(key, text, [&](Status r) { print("put", r.ok(), r ? "" : r.error().message, true); });
  } else if (cmd == "replace") {
    store->replace(key, current, text, [&](Result<bool> r) {
      print("replace", r.ok(), r ? "" : r.error().message, r ? json(*r) : json());
    });
  } else if (cmd == "remove") {
    store->remove(key, [&](Result<bool> r) { print("remove", r.ok(), r ? "" : r.error().message, r ? json(*r) : json()); });
  } else if (cmd == "remove-if") {
    store->remove_if(key, current, [&](Result<bool> r) {
      print("remove-if", r.ok(), r ? "" : r.error().message, r ? json(*r) : json());
    });
  } else {
    return usage("unknown command " + cmd);
  }
  io.run();
  return rc;
}
