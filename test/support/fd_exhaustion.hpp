// fd_exhaustion.hpp — for unit tests of what happens when the process is out of
// file descriptors: lowers the soft RLIMIT_NOFILE to a little above what is in use
// and fills it with dup()s; the destructor closes them and restores the limit.
#pragma once

#include <doctest/doctest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <vector>

namespace tabby::test {

class FdExhaustion {
 public:
  FdExhaustion() {
    REQUIRE(getrlimit(RLIMIT_NOFILE, &old_) == 0);
    int probe = dup(0);
    REQUIRE(probe >= 0);
    close(probe);
    rlimit low = old_;
    low.rlim_cur = static_cast<rlim_t>(probe) + 16;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
    for (;;) {
      int fd = dup(0);
      if (fd < 0) break;
      held_.push_back(fd);
    }
  }
  ~FdExhaustion() { release(); }
  FdExhaustion(const FdExhaustion&) = delete;
  FdExhaustion& operator=(const FdExhaustion&) = delete;

  // Descriptors taken to reach the limit (0 means the limit was not reached).
  size_t held() const { return held_.size(); }
  void release() {
    for (int fd : held_) close(fd);
    if (!held_.empty() || !restored_) setrlimit(RLIMIT_NOFILE, &old_);
    held_.clear();
    restored_ = true;
  }

 private:
  rlimit old_{};
  std::vector<int> held_;
  bool restored_ = false;
};

}  // namespace tabby::test
