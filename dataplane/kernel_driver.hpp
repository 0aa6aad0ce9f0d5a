// kernel_driver.hpp — the Linux dataplane (dataplane/linux_dataplane.hpp) on the agent's
// io_context: its netlink notification socket is watched (a route of ours deleted
// by hand or a link going down is repaired at once) and a timer resyncs with the
// kernel every 30 s. The owner edits desired state through dataplane() and calls
// apply(). Kernel state stays in place when the driver stops (restart without loss).
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>

#include "base/base.hpp"
#include "dataplane/dataplane.hpp"

namespace tabby::felix {

class KernelDriver {
 public:
  // Opens the Linux dataplane in the current network namespace (adopting the
  // routes tabby owns; nothing is written until apply()).
  static Result<std::unique_ptr<KernelDriver>> open(boost::asio::io_context& io);
  ~KernelDriver();

  dataplane::Dataplane& dataplane();
  // Writes what changed since the last apply; logs kernel errors. Returns the
  // seconds it took (for the apply-latency histogram).
  double apply();
  // Called after every apply with its duration, whoever triggered it.
  void on_applied(std::function<void(double seconds)> f);
  dataplane::DataplaneStatus status() const;
  void stop();

 private:
  KernelDriver();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tabby::felix
