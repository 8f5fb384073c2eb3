#include "provider/backoff.h"

#include <algorithm>

namespace unidesk::provider {

Millis Backoff::Next(Millis retry_after) {
  long long ceiling = s_.start.count();
  for (int i = 0; i < failures_ && ceiling < s_.cap.count(); ++i) ceiling *= 2;
  ceiling = std::min<long long>(ceiling, s_.cap.count());
  ++failures_;
  long long delay = std::uniform_int_distribution<long long>(0, ceiling)(rng_);
  if (retry_after.count() > 0) {
    // The server is ramping up: wait at least what it asked, jittered over one more second.
    delay = std::max(delay,
                     retry_after.count() + std::uniform_int_distribution<long long>(0, 1000)(rng_));
  }
  return Millis(delay);
}

}  // namespace unidesk::provider
