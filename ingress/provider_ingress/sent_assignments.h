#pragma once
// What one session has already sent its node: each assignment reaches the ingress twice when
// this copy also runs the scheduler (handed over in-process after the pass commits, then again
// from the bus), and the node should read it once. Bounded: the oldest claims are forgotten, and
// a duplicate sent that late is harmless (the agent ignores an attempt it already has).

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <utility>

namespace unidesk::ingress {

class SentAssignments {
 public:
  explicit SentAssignments(std::size_t capacity = 4096) : capacity_(capacity) {}
  /// True the first time (task, attempt) is claimed; thread-safe.
  bool Claim(const std::string& task, std::int64_t attempt);

 private:
  using Key = std::pair<std::string, std::int64_t>;
  std::size_t capacity_;
  std::mutex mu_;
  std::set<Key> claimed_;
  std::deque<Key> order_;  // oldest first
};

}  // namespace unidesk::ingress
