// install_cni.cpp — the file work of `tabby install-cni` (install_cni.hpp): copies
// binaries and writes configs into the host's CNI dirs, each file through a temp file
// in the same directory + fsync + rename(2) (atomic on one filesystem), so a runtime
// or the plugin reads either the old or the new file, never a partial one. With
// --watch it polls the projected service-account token (kubelet replaces it through
// a symlink swap, so polling the content is what sees every rotation) and re-copies it.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "felix/cni/install_cni.hpp"
#include "log/log.hpp"

namespace tabby::felix::cni {
namespace {

constexpr logging::Logger kLog{"install-cni"};
namespace fs = std::filesystem;

volatile sig_atomic_t g_stop = 0;
void on_stop_signal(int) { g_stop = 1; }

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return std::nullopt;
  return ss.str();
}

Status write_file_atomic(const std::string& path, const std::string& data, mode_t mode) {
  fs::path p(path);
  std::string tmp = (p.parent_path() / ("." + p.filename().string() + ".tabby-tmp." + std::to_string(::getpid()))).string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return fail_msg(tmp + ": " + std::strerror(errno));
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return fail_msg(tmp + ": write: " + why);
    }
    off += static_cast<size_t>(n);
  }
  if (::fchmod(fd, mode) != 0 || ::fsync(fd) != 0) {
    std::string why = std::strerror(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    return fail_msg(tmp + ": " + why);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return fail_msg("rename to " + path + ": " + why);
  }
  return {};
}

// Writes only when the content differs; true when it wrote.
Result<bool> write_if_changed(const std::string& path, const std::string& data, mode_t mode) {
  auto old = read_file(path);
  if (old && *old == data) return false;
  if (auto st = write_file_atomic(path, data, mode); !st) return Unexpected<Error>{st.error()};
  return true;
}

std::string self_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

bool executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

Status install_binary(const std::string& from, const std::string& to) {
  auto data = read_file(from);
  if (!data) return fail_msg("cannot read " + from);
  return write_file_atomic(to, *data, 0755);
}

struct Paths {
  std::string tabby_dir, plugin_config, kubeconfig, token, ca, conflist;
};
Paths paths_in_container(const InstallCniOptions& o) {
  fs::path d = fs::path(o.conf_dir) / "tabby";
  return {d.string(), (d / "tabby-cni.yaml").string(), (d / "tabby-kubeconfig").string(), (d / "token").string(),
          (d / "ca.crt").string(), (fs::path(o.conf_dir) / o.conf_name).string()};
}

// Copies the service-account token (and CA) and writes the kubeconfig; each file only
// when it changed. `changed` lists what was rewritten.
Status sync_credentials(const InstallCniOptions& o, const Paths& p, std::vector<std::string>& changed) {
  fs::path sa(o.serviceaccount_dir);
  auto token = read_file((sa / "token").string());
  if (!token || token->empty()) return fail_msg((sa / "token").string() + ": no service-account token to copy");
  auto ca = read_file((sa / "ca.crt").string());
  auto w = write_if_changed(p.token, *token, 0600);
  if (!w) return Unexpected<Error>{w.error()};
  if (*w) changed.push_back(p.token);
  if (ca) {
    auto wc = write_if_changed(p.ca, *ca, 0644);
    if (!wc) return Unexpected<Error>{wc.error()};
    if (*wc) changed.push_back(p.ca);
  }
  auto wk = write_if_changed(p.kubeconfig, kubeconfig_yaml(o, ca.has_value()), 0600);
  if (!wk) return Unexpected<Error>{wk.error()};
  if (*wk) changed.push_back(p.kubeconfig);
  return {};
}

int uninstall(const InstallCniOptions& o) {
  Paths p = paths_in_container(o);
  int failures = 0;
  for (const std::string& f : {p.conflist, (fs::path(o.bin_dir) / "tabby").string(), p.plugin_config, p.kubeconfig,
                               p.token, p.ca}) {
    if (::unlink(f.c_str()) == 0) {
      std::cout << "removed " << f << "\n";
    } else if (errno != ENOENT) {
      std::cerr << "tabby install-cni: cannot remove " << f << ": " << std::strerror(errno) << "\n";
      ++failures;
    }
  }
  if (::rmdir(p.tabby_dir.c_str()) == 0) std::cout << "removed " << p.tabby_dir << "/\n";
  return failures ? 1 : 0;
}

int install(const InstallCniOptions& o) {
  Paths p = paths_in_container(o);
  for (const std::string& d : {o.bin_dir, o.conf_dir}) {
    struct stat st {};
    if (::stat(d.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      std::cerr << "tabby install-cni: " << d << " is not a directory (is the host path mounted?)\n";
      return 1;
    }
  }
  std::string src = o.plugins_from.empty() ? self_dir() : o.plugins_from;
  const std::string tabby_src = "/proc/self/exe";
  auto fail = [](const std::string& what) {
    std::cerr << "tabby install-cni: " << what << "\n";
    return 1;
  };
  if (auto st = install_binary(tabby_src, (fs::path(o.bin_dir) / "tabby").string()); !st) return fail(st.error().message);
  std::cout << "installed " << (fs::path(o.bin_dir) / "tabby").string() << "\n";
  std::vector<std::string> chained;
  if (o.portmap) chained.push_back("portmap");
  if (o.bandwidth) chained.push_back("bandwidth");
  for (const auto& name : chained) {
    std::string from = (fs::path(src) / name).string(), to = (fs::path(o.bin_dir) / name).string();
    if (executable_file(from) && fs::path(from) != fs::path(to)) {
      if (auto st = install_binary(from, to); !st) return fail(st.error().message);
      std::cout << "installed " << to << "\n";
    } else if (!executable_file(to)) {
      return fail("the conflist chains '" + name + "' but it is neither in " + src + " nor in " + o.bin_dir +
                  " (install Debian's containernetworking-plugins, or pass --no-" + name + ")");
    }
  }
  std::error_code ec;
  fs::create_directories(p.tabby_dir, ec);
  if (ec) return fail(p.tabby_dir + ": " + ec.message());
  ::chmod(p.tabby_dir.c_str(), 0755);
  if (o.datastore == "kubernetes") {
    std::vector<std::string> changed;
    if (auto st = sync_credentials(o, p, changed); !st) return fail(st.error().message);
    for (const auto& f : changed) std::cout << "wrote " << f << "\n";
  }
  if (auto st = write_file_atomic(p.plugin_config, plugin_config_yaml(o), 0644); !st) return fail(st.error().message);
  std::cout << "wrote " << p.plugin_config << "\n";
  // The conflist last: a runtime that sees it finds everything it references.
  if (auto st = write_file_atomic(p.conflist, conflist_json(o), 0644); !st) return fail(st.error().message);
  std::cout << "wrote " << p.conflist << std::endl;
  // Runtimes (libcni) use the first network config in name order: say so when
  // another one (Calico's 10-calico.conflist, say) shadows ours.
  std::vector<std::string> configs;
  for (const auto& e : fs::directory_iterator(o.conf_dir, ec)) {
    std::string name = e.path().filename().string(), ext = e.path().extension().string();
    if (e.is_regular_file(ec) && (ext == ".conf" || ext == ".conflist" || ext == ".json")) configs.push_back(name);
  }
  std::sort(configs.begin(), configs.end());
  if (!configs.empty() && configs.front() != o.conf_name)
    kLog.warning(o.conf_dir + "/" + configs.front() + " sorts before " + o.conf_name +
                 ": the container runtime uses it, not tabby's (remove it, or pass --conf-name with a smaller name)");
  if (!o.watch) return 0;

  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  kLog.info("watching " + o.serviceaccount_dir + " for token rotation every " + std::to_string(o.interval_ms) + " ms");
  bool failing = false;
  while (!g_stop) {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(o.interval_ms);
    while (!g_stop && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (g_stop) break;
    std::vector<std::string> changed;
    if (auto st = sync_credentials(o, p, changed); !st) {
      if (!failing) kLog.warning("cannot refresh the plugin's credentials (the old ones stay): " + st.error().message);
      failing = true;
      continue;
    }
    failing = false;
    for (const auto& f : changed) kLog.info("rewrote " + f + " (service-account token or CA changed)");
  }
  return 0;
}

}  // namespace

int run_install_cni(const std::vector<std::string>& args) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << "usage: tabby install-cni [--bin-dir D] [--conf-dir D] [--host-conf-dir D] [--conf-name N]\n"
                 "                         [--network-name N] [--mtu N] [--node-name N] [--api-socket P]\n"
                 "                         [--datastore kubernetes|file|etcd] [--datastore-dir D] [--etcd-endpoints U,U]\n"
                 "                         [--server URL] [--serviceaccount-dir D] [--plugins-from D]\n"
                 "                         [--container-namespace NS] [--no-portmap] [--no-bandwidth]\n"
                 "                         [--watch [--interval SECONDS] | --uninstall]\n"
                 "Installs tabby as the host's CNI plugin (binary, conflist chaining portmap and bandwidth,\n"
                 "the plugin's config and kubeconfig); --watch keeps the token copy fresh. See README.\n";
    return 0;
  }
  auto opts = parse_install_cni_args(args, [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    return v ? std::optional<std::string>(v) : std::nullopt;
  });
  if (!opts) {
    std::cerr << "tabby " << opts.error().message << "\n";
    return 2;
  }
  return opts->uninstall ? uninstall(*opts) : install(*opts);
}

}  // namespace tabby::felix::cni
