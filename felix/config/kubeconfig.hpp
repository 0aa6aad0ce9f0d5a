// kubeconfig.hpp — reads the parts of a kubeconfig file (Kubernetes "Organizing
// Cluster Access Using kubeconfig Files", apiVersion v1, kind Config) that tabby's
// kubernetes datastore needs: the current context's server URL, CA file and
// token file. Used for `datastore.kubeconfig` in the agent config, which is how the
// CNI plugin on the host reaches the API server (`tabby install-cni` writes that
// kubeconfig, felix/cni/install_cni.hpp). Pure: the text comes in.
#pragma once

#include <string>

#include "base/base.hpp"

namespace tabby::felix {

struct KubeconfigAccess {
  std::string server;      // clusters[].cluster.server
  std::string ca_file;     // clusters[].cluster.certificate-authority ("" = none given)
  std::string token_file;  // users[].user.tokenFile
};

// The current context's cluster and user. Errors name `origin` and the field:
// no current-context, a context/cluster/user it names missing, no server, and
// credentials tabby does not read (inline token, client certificates, exec
// plugins, certificate-authority-data): those are refused rather than ignored.
Result<KubeconfigAccess> parse_kubeconfig(const std::string& text, const std::string& origin);

}  // namespace tabby::felix
