#include "core/detail/append_plan.h"

#include "core/ids.h"

namespace unidesk::core::detail {
namespace {

PlanStep Reject(AppendError code, std::string message) {
  PlanStep s;
  s.kind = StepKind::kReject;
  s.error = {code, std::move(message)};
  return s;
}

std::string VersionText(std::int64_t v) { return v < 0 ? "no stream" : std::to_string(v); }

}  // namespace

std::vector<std::size_t> PickGroup(const std::vector<const AppendRequest*>& queued,
                                   const std::multiset<std::string>& in_flight, std::size_t limit) {
  std::vector<std::size_t> picked;
  std::set<std::string> keys, left_streams;
  for (std::size_t i = 0; i < queued.size() && picked.size() < limit; ++i) {
    const AppendRequest& r = *queued[i];
    bool wait = in_flight.count(r.stream_id) > 0 || left_streams.count(r.stream_id) > 0 ||
                (r.idempotency_key && keys.count(*r.idempotency_key) > 0);
    if (wait) {
      // Later requests of its stream, or with its key, must not overtake it.
      left_streams.insert(r.stream_id);
      if (r.idempotency_key) keys.insert(*r.idempotency_key);
      continue;
    }
    if (r.idempotency_key) keys.insert(*r.idempotency_key);
    picked.push_back(i);
  }
  return picked;
}

std::string RequestHash(const AppendRequest& request) {
  std::string canon = request.stream_id;
  canon.push_back('\0');
  canon += std::to_string(static_cast<int>(request.expected.kind)) + ":" +
           std::to_string(request.expected.version);
  for (const auto& e : request.events) {
    canon.push_back('\0');
    canon += e.type;
    canon.push_back('\0');
    canon += e.data_json;
  }
  return Sha256Hex(canon);
}

std::vector<PlanStep> PlanGroup(const std::vector<const AppendRequest*>& requests,
                                const std::vector<std::string>& hashes, GroupState state) {
  std::vector<PlanStep> plan;
  plan.reserve(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const AppendRequest& r = *requests[i];
    if (r.idempotency_key) {
      auto k = state.keys.find(*r.idempotency_key);
      if (k != state.keys.end()) {
        if (k->second.request_hash != hashes[i]) {
          plan.push_back(Reject(AppendError::kIdempotencyMismatch,
                                "idempotency key '" + *r.idempotency_key +
                                    "' was used before with a different request body"));
        } else {
          PlanStep s;
          s.kind = StepKind::kRepeat;
          s.repeat = {Position{k->second.first_position}, Position{k->second.last_position},
                      k->second.last_version, true};
          plan.push_back(s);
        }
        continue;
      }
    }
    // A retry after an in-doubt commit reuses its event ids: same content means "already done".
    std::size_t found = 0;
    bool same = true;
    AppendOutcome prior{Position{INT64_MAX}, Position{0}, -1, true};
    for (const auto& e : r.events) {
      auto it = state.events_by_id.find(e.event_id);
      if (it == state.events_by_id.end()) continue;
      ++found;
      const StoredEvent& s = it->second;
      same = same && s.stream_id == r.stream_id && s.type == e.type;
      prior.first.value = std::min(prior.first.value, s.position);
      prior.last.value = std::max(prior.last.value, s.position);
      prior.last_version = std::max(prior.last_version, s.stream_version);
    }
    if (found > 0) {
      if (found == r.events.size() && same) {
        PlanStep s;
        s.kind = StepKind::kRepeat;
        s.repeat = prior;
        plan.push_back(s);
      } else {
        plan.push_back(Reject(AppendError::kDuplicateEventId,
                              "an event id of this request exists already with other content"));
      }
      continue;
    }
    auto v = state.stream_versions.find(r.stream_id);
    std::int64_t current = v == state.stream_versions.end() ? -1 : v->second;
    bool fits = r.expected.kind == ExpectedVersion::Kind::kAny ||
                (r.expected.kind == ExpectedVersion::Kind::kNoStream && current < 0) ||
                (r.expected.kind == ExpectedVersion::Kind::kExact && current == r.expected.version);
    if (!fits) {
      std::string want = r.expected.kind == ExpectedVersion::Kind::kNoStream
                             ? "no stream"
                             : std::to_string(r.expected.version);
      plan.push_back(Reject(
          AppendError::kVersionConflict,
          "stream '" + r.stream_id + "' is at " + VersionText(current) + ", expected " + want));
      continue;
    }
    PlanStep s;
    s.kind = StepKind::kWrite;
    s.first_version = current + 1;
    state.stream_versions[r.stream_id] = current + static_cast<std::int64_t>(r.events.size());
    plan.push_back(s);
  }
  return plan;
}

}  // namespace unidesk::core::detail
