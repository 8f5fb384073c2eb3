#pragma once
// The liveness rule (DESIGN §3): pure decisions from durations measured by Postgres's clock.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace unidesk::handlers {

using Millis = std::chrono::milliseconds;

/// Intervals of the rule. Defaults are production values; tests scale them to milliseconds.
struct LivenessSettings {
  Millis heartbeat_interval{15000};  // told to every agent in `welcome`
  Millis suspect_after{35000};       // two missed heartbeats (plus slack): no new tasks
  Millis offline_after{90000};       // not heard from: offline
  Millis dormant_after{Millis(7LL * 24 * 3600 * 1000)};  // offline this long: dormant
  Millis grace{120000};  // after the monitor takes over, nobody is marked suspect or offline
  Millis tick{1000};     // how often the monitor evaluates
};

/// What the monitor knows of one node, all durations as seen by Postgres now.
struct LivenessView {
  std::string status;  // online | suspect | offline | dormant
  bool has_session = false;
  Millis silent{0};          // since the last hello or heartbeat
  Millis in_status{0};       // since the status was set
  Millis since_takeover{0};  // since this monitor became the one evaluating
};

/// A transition to record as an event.
struct LivenessDecision {
  std::string event_type;  // node.online | node.suspect | node.offline | node.dormant
  std::string new_status;
  std::string reason;
};

/// The transition `view` calls for, if any.
std::optional<LivenessDecision> DecideLiveness(const LivenessView& view,
                                               const LivenessSettings& settings);

}  // namespace unidesk::handlers
