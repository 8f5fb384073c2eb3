// The watched child process against real processes (/bin/sh): output, exit codes, the stall
// limit, cancel, a binary that does not exist, and what the child inherits.

#include "provider/watched_process.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

using namespace unidesk::provider;
using Clock = std::chrono::steady_clock;

namespace {

WatchedResult Sh(const std::string& script, WatchOptions o = {},
                 std::vector<std::string>* lines = nullptr) {
  if (lines) o.on_line = [lines](const std::string& l) { lines->push_back(l); };
  return RunWatched({"/bin/sh", "-c", script}, o);
}

/// A silent 30 s child is killed by a 400 ms stall limit well before it ends.
void ExpectStalled(const std::string& script) {
  CAPTURE(script);
  WatchOptions o;
  o.stall_timeout = std::chrono::milliseconds(400);
  auto start = Clock::now();
  WatchedResult r = Sh(script, o);
  CHECK(r.end == WatchedEnd::kStalled);
  CHECK(Clock::now() - start < std::chrono::seconds(5));
}

}  // namespace

TEST_CASE("watched process: lines, the exit code and the end of stderr come back") {
  std::vector<std::string> lines;
  WatchedResult r = Sh("echo one; printf 'two\\nthree'; echo oops >&2; exit 3", {}, &lines);
  CHECK(r.end == WatchedEnd::kExited);
  CHECK(r.exit_code == 3);
  CHECK(lines == std::vector<std::string>{"one", "two", "three"});  // the unterminated one too
  CHECK(r.stderr_tail == "oops\n");

  r = Sh("kill -9 $$");
  CHECK(r.end == WatchedEnd::kExited);
  CHECK(r.exit_code == -1);  // ended by a signal
}

TEST_CASE("watched process: silence past the stall limit kills it; output keeps it alive") {
  ExpectStalled("sleep 30");

  // Talking every 100 ms for 3.6 s: three times the limit, never silent for it (the limit
  // leaves room for a loaded machine's slow fork of each `sleep`).
  WatchOptions o;
  o.stall_timeout = std::chrono::milliseconds(1200);
  std::vector<std::string> lines;
  WatchedResult r =
      Sh("i=0; while [ $i -lt 36 ]; do i=$((i+1)); echo $i; sleep 0.1; done", o, &lines);
  CHECK(r.end == WatchedEnd::kExited);
  CHECK(r.exit_code == 0);
  CHECK(lines.size() == 36);
}

TEST_CASE("watched process: cancel kills it at once") {
  auto start = Clock::now();
  WatchOptions o;
  o.cancelled = [&] { return Clock::now() - start > std::chrono::milliseconds(300); };
  WatchedResult r = Sh("sleep 30", o);
  CHECK(r.end == WatchedEnd::kCancelled);
  CHECK(Clock::now() - start < std::chrono::seconds(5));
}

TEST_CASE("watched process: a binary that does not exist is a spawn failure naming it") {
  WatchedResult r = RunWatched({"/nonexistent/helper", "x"}, {});
  CHECK(r.end == WatchedEnd::kSpawnFailed);
  CHECK(r.error.find("/nonexistent/helper") != std::string::npos);
}

TEST_CASE("watched process: the child inherits no descriptor beyond stdin, stdout, stderr") {
  // Without close-on-exec, as a careless library might; numbered apart from ls's own handle.
  int opened = open("/dev/null", O_RDONLY);
  int leaked = fcntl(opened, F_DUPFD, 100);
  close(opened);
  REQUIRE(leaked >= 100);
  std::vector<std::string> lines;
  // The shell's own listing descriptor is the only other one ls sees.
  WatchedResult r = Sh("ls /proc/self/fd", {}, &lines);
  close(leaked);
  REQUIRE(r.exit_code == 0);
  CHECK(lines.size() <= 4);  // 0, 1, 2 and ls's directory handle
  for (const auto& l : lines) CHECK(l != std::to_string(leaked));
}

TEST_CASE("watched process: a child that closes its output and lives on is still watched") {
  ExpectStalled("exec >/dev/null 2>&1; sleep 30");
  WatchedResult r =
      Sh("exec >/dev/null 2>&1; sleep 0.3; exit 4");  // and its exit code still comes back
  CHECK(r.end == WatchedEnd::kExited);
  CHECK(r.exit_code == 4);
}

TEST_CASE("watched process: a hook that throws leaves no child behind") {
  WatchOptions o;
  o.on_line = [](const std::string&) { throw std::runtime_error("hook failed"); };
  try {
    // The child names itself, then lives on; the throwing hook must not leave it running.
    Sh("echo $$; exec sleep 30", o);
    FAIL("the hook's exception did not come through");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "hook failed");
  }
  // No child of this process is left: waitpid has nobody to wait for.
  CHECK(waitpid(-1, nullptr, WNOHANG) == -1);
  CHECK(errno == ECHILD);
}
