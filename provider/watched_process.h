#pragma once
// A child process the caller can always stop: it is killed when the caller cancels or when it
// says nothing for too long. Used for work that may block in a library call that cannot be
// interrupted from inside (a git fetch from a server that accepts and never answers).

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace unidesk::provider {

struct WatchOptions {
  /// Polled every 100 ms; true kills the child (SIGKILL).
  std::function<bool()> cancelled;
  /// Nothing on stdout or stderr for this long kills the child. Zero: no limit.
  std::chrono::milliseconds stall_timeout{0};
  /// Each line the child writes to stdout, without its end of line.
  std::function<void(const std::string&)> on_line;
};

enum class WatchedEnd {
  kExited,       // it ended by itself: see exit_code
  kCancelled,    // killed because `cancelled` said so
  kStalled,      // killed after stall_timeout of silence
  kSpawnFailed,  // it never ran: see error
};

struct WatchedResult {
  WatchedEnd end = WatchedEnd::kExited;
  int exit_code = -1;       // -1 when a signal ended it
  std::string stderr_tail;  // the last 4 KiB it wrote to stderr
  std::string error;        // why the spawn failed
};

/// Runs argv[0] (a path; no PATH search) with stdin from /dev/null, no inherited descriptors
/// beyond stdout and stderr, default signal dispositions and an empty signal mask, and waits
/// for it. Blocking: call from a worker thread.
WatchedResult RunWatched(const std::vector<std::string>& argv, const WatchOptions& options);

}  // namespace unidesk::provider
