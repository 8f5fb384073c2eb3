#pragma once
// How far an attempt's container output has been read, so that an agent that restarts follows
// the container on from there without repeating or losing an entry. Docker stamps every log
// entry (`timestamps=1`), sends entries in the order of its log file, and its `since` is
// inclusive. Times are not monotonic in that order: stdout and stderr are stamped by separate
// readers, and every part of a line longer than 16 KiB keeps the time of its first part. So
// the saved position is a `since` a margin before the latest time read (and no later than the
// start of a line still open), with the number of entries already read at or after it: since
// what was read is a prefix of the file, those are exactly the first ones `since` sends again.
// Pure.

#include <cstdint>
#include <deque>
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
  /// How far before the latest time read the saved `since` goes (the stdout/stderr skew).
  static constexpr std::int64_t kMarginNanos = 2'000'000'000;

  LogCursor() = default;
  /// A position saved earlier: the `since` to ask for and how many entries Docker then sends
  /// that were read already.
  LogCursor(std::string since, std::int64_t skip);

  /// Whether the entry (its time, its stream, and whether its text ends a line) is new; false
  /// for one read before the restart. Either way it counts as read from now on.
  bool Take(std::string_view at, bool is_stderr, bool ends_line);

  /// The position to save: `since()` ("" for the whole log) and `skip()`.
  std::string since() const;
  std::int64_t skip() const;
  /// The Engine API's `since` (seconds.nanoseconds) for `since()`, or "".
  std::string SinceParam() const;

 private:
  std::optional<DockerTime> Floor() const;  // the `since` to save now

  std::optional<DockerTime> resume_since_;  // what this cursor was resumed from
  std::int64_t resume_skip_ = 0;
  std::int64_t skipped_ = 0;                // of resume_skip_
  std::optional<DockerTime> latest_;        // the latest time read
  std::optional<DockerTime> open_line_[2];  // per stream: the time of a line not yet ended
  std::deque<DockerTime> recent_;           // times read, in file order, down to the floor
};

}  // namespace unidesk::provider
