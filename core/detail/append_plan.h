#pragma once
// Pure decisions of a group commit: which queued appends form the next group, and which of a
// group's appends write, which repeat, which are refused.

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/event_store.h"

namespace unidesk::core::detail {

/// What Postgres holds for an idempotency key.
struct StoredKey {
  std::string request_hash;
  std::string stream_id;
  std::int64_t first_position = 0;
  std::int64_t last_position = 0;
  std::int64_t last_version = -1;
};

/// What Postgres holds for an event id the caller supplied.
struct StoredEvent {
  std::string stream_id;
  std::int64_t position = 0;
  std::int64_t stream_version = 0;
  std::string type;
};

/// The state a group is planned against, read under the group's locks.
struct GroupState {
  std::map<std::string, std::int64_t> stream_versions;  // last version; absent = no stream
  std::map<std::string, StoredKey> keys;
  std::map<std::string, StoredEvent> events_by_id;
};

enum class StepKind { kWrite, kRepeat, kReject };

/// The decision for one request of the group.
struct PlanStep {
  StepKind kind = StepKind::kReject;
  std::int64_t first_version = 0;  // kWrite: version of the first new event
  AppendOutcome repeat;            // kRepeat: the original outcome
  TypedError<AppendError> error{AppendError::kInvalidRequest, ""};  // kReject
};

/// Which of the queued requests (oldest first) form the next group, by index, at most `limit`.
/// Appends to one stream land in the order they were queued: a stream in a group still in
/// flight on another writer (`in_flight`) is left for a later group, and so is every request
/// after one that is left, on its stream or with its idempotency key. Two requests with one
/// idempotency key go to different groups, since the second must see the first's committed
/// record.
std::vector<std::size_t> PickGroup(const std::vector<const AppendRequest*>& queued,
                                   const std::multiset<std::string>& in_flight, std::size_t limit);

/// Fingerprint of what an idempotency key protects: stream, expectation, types and data.
std::string RequestHash(const AppendRequest& request);

/// Plans `requests` in order; a write advances the stream version seen by later requests.
/// `hashes[i]` is RequestHash(*requests[i]). Every event id in a request must be present in
/// `state.events_by_id` for the request to count as a repeat (appends are all-or-nothing).
std::vector<PlanStep> PlanGroup(const std::vector<const AppendRequest*>& requests,
                                const std::vector<std::string>& hashes, GroupState state);

}  // namespace unidesk::core::detail
