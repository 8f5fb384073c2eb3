#pragma once
// Reconnect delays: exponential backoff with full jitter (a random delay between 0 and the
// exponential ceiling), so a server restart does not bring every node back in the same second.

#include <chrono>
#include <random>

namespace unidesk::provider {

using Millis = std::chrono::milliseconds;

struct BackoffSettings {
  Millis start{1000};   // ceiling of the first retry
  Millis cap{60000};    // ceiling never grows past this
  Millis reset{60000};  // connected this long: the next failure starts from `start` again
};

class Backoff {
 public:
  explicit Backoff(BackoffSettings s, std::uint64_t seed = std::random_device{}())
      : s_(s), rng_(seed) {}
  /// The delay before the next attempt. A `retry_after` (from a 503) replaces the jittered
  /// delay and does not count as a failure: the exponent only grows on real failures.
  Millis Next(Millis retry_after = Millis(0));
  /// A session ended after lasting `connected`.
  void SessionEnded(Millis connected) {
    if (connected >= s_.reset) failures_ = 0;
  }
  int failures() const { return failures_; }

 private:
  BackoffSettings s_;
  std::mt19937_64 rng_;
  int failures_ = 0;
};

}  // namespace unidesk::provider
