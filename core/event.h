#pragma once
// The event envelope: what is appended (NewEvent) and what is read back (RecordedEvent).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace unidesk::core {

/// Global position of an event in the log (dense up to rolled-back gaps, 1-based).
struct Position {
  std::int64_t value = 0;
  friend bool operator==(Position a, Position b) { return a.value == b.value; }
  friend bool operator<(Position a, Position b) { return a.value < b.value; }
};

/// Where a reader stands in delivery order: (transaction id, position) of the last event seen.
struct LogCursor {
  std::uint64_t tx_id = 0;
  std::int64_t position = 0;
  friend bool operator==(const LogCursor& a, const LogCursor& b) {
    return a.tx_id == b.tx_id && a.position == b.position;
  }
  friend bool operator<(const LogCursor& a, const LogCursor& b) {
    return a.tx_id != b.tx_id ? a.tx_id < b.tx_id : a.position < b.position;
  }
};

/// Who and why, carried by every event.
struct EventMetadata {
  std::string actor;           // "user:alice", "node:gpu-1", "handler:scheduler", "cli:root"
  std::string correlation_id;  // groups every event caused by one request
  std::string causation_id;    // event id (or request id) that caused this event
  std::string source;          // process that appended: "cli", "server/api", "test"
};

/// An event to append. `data_json` must be a JSON object.
struct NewEvent {
  std::string type;
  std::string data_json = "{}";
  EventMetadata metadata;
  std::string event_id;  // UUID; generated when empty. A retry reusing it is idempotent.
};

/// An event as stored, upcast to the current schema version of its type.
struct RecordedEvent {
  Position position;
  std::uint64_t tx_id = 0;
  std::string stream_id;
  std::int64_t stream_version = 0;
  std::string event_id;
  std::string type;
  int schema_version = 1;
  std::string data_json;
  EventMetadata metadata;
  std::string recorded_at;  // ISO 8601 UTC

  LogCursor cursor() const { return {tx_id, position.value}; }
};

}  // namespace unidesk::core
