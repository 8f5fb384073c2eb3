// The liveness rule, decided from durations alone.

#include "handlers/liveness_rules.h"

#include <doctest/doctest.h>

using namespace unidesk::handlers;
using std::chrono::milliseconds;

namespace {
LivenessView View(std::string status, long silent_ms, bool session = true,
                  long since_takeover_ms = 1'000'000, long in_status_ms = 0) {
  LivenessView v;
  v.status = std::move(status);
  v.has_session = session;
  v.silent = milliseconds(silent_ms);
  v.since_takeover = milliseconds(since_takeover_ms);
  v.in_status = milliseconds(in_status_ms);
  return v;
}
std::string Next(const LivenessView& v) {
  auto d = DecideLiveness(v, LivenessSettings{});
  return d ? d->new_status : "";
}
}  // namespace

TEST_CASE("online -> suspect after two missed heartbeats -> offline after 90 s") {
  CHECK(Next(View("online", 20'000)) == "");
  CHECK(Next(View("online", 36'000)) == "suspect");
  CHECK(Next(View("suspect", 60'000)) == "");
  CHECK(Next(View("suspect", 90'000)) == "offline");
  CHECK(Next(View("online", 95'000)) == "offline");  // a missed tick goes straight there
  auto d = DecideLiveness(View("suspect", 91'000, false), LivenessSettings{});
  CHECK(d->event_type == "node.offline");
  CHECK(d->reason == "no heartbeat for 91.0 s (no connection)");
}

TEST_CASE("heartbeats bring a node back; long offline turns dormant") {
  CHECK(Next(View("suspect", 1'000)) == "online");
  CHECK(Next(View("offline", 1'000)) == "online");
  CHECK(Next(View("offline", 1'000, false)) == "");  // a stale row without a session
  CHECK(Next(View("offline", 10LL * 24 * 3600 * 1000, false, 1'000'000, 8LL * 24 * 3600 * 1000)) ==
        "dormant");
  CHECK(Next(View("dormant", 1'000)) == "online");
}

TEST_CASE("after a takeover, the fleet gets a grace period") {
  CHECK(Next(View("online", 500'000, false, 10'000)) == "");
  CHECK(Next(View("suspect", 500'000, false, 119'000)) == "");
  CHECK(Next(View("online", 500'000, false, 121'000)) == "offline");
  CHECK(Next(View("suspect", 1'000, true, 10)) == "online");  // coming back needs no grace
}
