#pragma once
// How far an attempt's container output has been read, so that an agent that restarts follows
// the container on from there: each log entry Docker sends carries its time (`timestamps=1`),
// and `since` is inclusive, so the cursor keeps the last entry's time and how many entries of
// that very time were read. Pure.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace unidesk::provider {

/// A time Docker wrote (RFC 3339 with up to nine fractional digits, UTC `Z`).
struct DockerTime {
  std::int64_t seconds = 0;  // since the epoch
  std::int64_t nanos = 0;
  bool operator==(const DockerTime& o) const { return seconds == o.seconds && nanos == o.nanos; }
  bool operator<(const DockerTime& o) const {
    return seconds != o.seconds ? seconds < o.seconds : nanos < o.nanos;
  }
};
std::optional<DockerTime> ParseDockerTime(std::string_view rfc3339);

/// A log entry's payload with `timestamps=1`: "<time> <text>". nullopt when there is no time.
std::optional<std::pair<std::string_view, std::string_view>> SplitTimestamped(
    std::string_view payload);

class LogCursor {
 public:
  LogCursor() = default;
  /// A cursor saved earlier: `at` the last entry's time, `read_at` entries of that time read.
  LogCursor(std::string at, std::int64_t read_at);

  /// Whether the entry of time `at` is new; a new one moves the cursor past it. After a saved
  /// position, the entries the inclusive `since` sends again are not new.
  bool Take(std::string_view at);

  /// The Engine API's `since` (seconds.nanoseconds), or "" for the whole log.
  std::string SinceParam() const;
  const std::string& at() const { return at_; }
  std::int64_t read_at() const { return read_at_; }

 private:
  std::string at_;
  std::int64_t read_at_ = 0;
  std::int64_t to_skip_ = 0;  // entries of time `at_` still to pass over after a restart
  bool resuming_ = false;     // no new entry taken yet since the saved position
};

}  // namespace unidesk::provider
