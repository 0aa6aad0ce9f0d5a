// main.cpp — the `tabby` binary: dispatches to the agent and the read commands, and
// runs as the CNI plugin when a container runtime execs it (CNI_COMMAND set, no
// subcommand: CNI spec 1.0 "Parameters").
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "felix/agent/agent.hpp"
#include "felix/api/cli.hpp"
#include "felix/cni/cni.hpp"
#include "felix/cni/install_cni.hpp"
#include "felix/config/autodetect_host.hpp"
#include "log/log.hpp"

namespace {

void usage(std::ostream& o) {
  o << "usage: tabby COMMAND [ARGS]\n\n"
       "commands:\n"
       "  agent --config FILE             run the node agent (BGP speaker, API)\n"
       "  status [-o json] [--socket S]   peer table of the running agent\n"
       "  routes [-o json] [--socket S]   Loc-RIB with best-path reasons\n"
       "  policy [-o json|wide] [--socket S]  per-endpoint policies and counters\n"
       "  ipam [-o json] [--socket S]     IPAM blocks per node, totals per pool\n"
       "  ipam check --config FILE [-o json]   allocations whose pod is gone (from the datastore)\n"
       "  ipam release ADDR --config FILE [--dry-run]   free one of them\n"
       "  ipam release --block CIDR --config FILE [--dry-run]   free a gone node's block\n"
       "  endpoints [-o json] [--socket S]  workload endpoints (node, interface, IPs, labels)\n"
       "  install-cni [--watch|--uninstall] [...]  put the CNI plugin, its conflist and kubeconfig on\n"
       "                                  the host (the DaemonSet's init container; see README)\n"
       "  autodetect [-4|-6] [METHOD]     the address IP=autodetect would pick (first-found,\n"
       "                                  can-reach=A, interface=RE, skip-interface=RE, cidr=C)\n"
       "  version                         print the version\n"
       "\n"
       "With CNI_COMMAND set (and no command) it runs as the CNI plugin: ADD, DEL, CHECK,\n"
       "VERSION (CNI spec 1.0), network config JSON on stdin.\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 && std::getenv("CNI_COMMAND")) return tabby::felix::cni::run_cni_main();
  if (argc < 2) {
    usage(std::cerr);
    return 2;
  }
  std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "agent") {
    if (auto bad = tabby::logging::threshold_from_env()) {
      std::cerr << "tabby agent: " << *bad << "\n";
      return 2;
    }
    return tabby::felix::run_agent(args);
  }
  if (cmd == "autodetect") return tabby::felix::cli_autodetect(args);
  if (cmd == "install-cni") return tabby::felix::cni::run_install_cni(args);
  if (cmd == "status") return tabby::felix::cli_status(args);
  if (cmd == "routes") return tabby::felix::cli_routes(args);
  if (cmd == "policy") return tabby::felix::cli_policy(args);
  if (cmd == "ipam" && !args.empty() && (args[0] == "check" || args[0] == "release"))
    return tabby::felix::cni::run_ipam_admin(args, std::cout, std::cerr);
  if (cmd == "ipam") return tabby::felix::cli_ipam(args);
  if (cmd == "endpoints") return tabby::felix::cli_endpoints(args);
  if (cmd == "version" || cmd == "--version") {
    std::cout << "tabby " << TABBY_VERSION << "\n";
    return 0;
  }
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    usage(std::cout);
    return 0;
  }
  std::cerr << "tabby: unknown command '" << cmd << "'\n";
  usage(std::cerr);
  return 2;
}
