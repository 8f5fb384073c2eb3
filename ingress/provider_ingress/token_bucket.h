#pragma once
// A token bucket: `rate` tokens a second, at most `burst` saved up. Pure; the caller passes time.

#include <algorithm>
#include <chrono>

namespace unidesk::ingress {

class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;
  TokenBucket(double rate, double burst) : rate_(rate), burst_(burst), tokens_(burst) {}

  /// Takes one token if there is one.
  bool Take(Clock::time_point now) {
    if (started_) {
      double elapsed = std::chrono::duration<double>(now - last_).count();
      tokens_ = std::min(burst_, tokens_ + std::max(0.0, elapsed) * rate_);
    }
    started_ = true;
    last_ = now;
    if (tokens_ < 1.0) return false;
    tokens_ -= 1.0;
    return true;
  }

 private:
  double rate_;
  double burst_;
  double tokens_;
  bool started_ = false;
  Clock::time_point last_;
};

}  // namespace unidesk::ingress
