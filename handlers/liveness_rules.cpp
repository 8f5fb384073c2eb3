#include "handlers/liveness_rules.h"

namespace unidesk::handlers {

namespace {

std::string Seconds(Millis d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

}  // namespace

std::optional<LivenessDecision> DecideLiveness(const LivenessView& v, const LivenessSettings& s) {
  bool heard_recently = v.silent < s.suspect_after;
  bool in_grace = v.since_takeover < s.grace;
  std::string silence = "no heartbeat for " + Seconds(v.silent) +
                        (v.has_session ? " (connection still open)" : " (no connection)");
  if (v.status == "online") {
    if (in_grace) return std::nullopt;
    if (v.silent >= s.offline_after) return LivenessDecision{"node.offline", "offline", silence};
    if (!heard_recently) return LivenessDecision{"node.suspect", "suspect", silence};
    return std::nullopt;
  }
  if (v.status == "suspect") {
    if (heard_recently) return LivenessDecision{"node.online", "online", "heartbeats resumed"};
    if (!in_grace && v.silent >= s.offline_after) {
      return LivenessDecision{"node.offline", "offline", silence};
    }
    return std::nullopt;
  }
  if (v.status == "offline" || v.status == "dormant") {
    if (heard_recently && v.has_session) {
      return LivenessDecision{"node.online", "online", "heartbeats resumed"};
    }
    if (v.status == "offline" && v.in_status >= s.dormant_after) {
      return LivenessDecision{
          "node.dormant", "dormant",
          "offline for " + Seconds(v.in_status) + "; kept, its token re-attaches it"};
    }
  }
  return std::nullopt;
}

}  // namespace unidesk::handlers
