#include "provider/backoff.h"

#include <algorithm>

namespace unidesk::provider {

Millis Backoff::Next(Millis retry_after) {
  long long ceiling = s_.start.count();
  for (int i = 0; i < failures_ && ceiling < s_.cap.count(); ++i) ceiling *= 2;
  ceiling = std::min<long long>(ceiling, s_.cap.count());
  if (retry_after.count() > 0) {
    // The server answered and is pacing accepts: wait what it asked, jittered over one more
    // second. This is not a failure, so the ceiling does not grow — otherwise a few 503s in a
    // row during a mass reconnect push a node past the cap.
    long long asked = std::min<long long>(retry_after.count(), s_.cap.count());
    return Millis(asked + std::uniform_int_distribution<long long>(0, 1000)(rng_));
  }
  ++failures_;
  return Millis(std::uniform_int_distribution<long long>(0, ceiling)(rng_));
}

}  // namespace unidesk::provider
