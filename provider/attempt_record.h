#pragma once
// What an agent that restarts needs to follow an attempt whose container outlived the agent
// before it: the assignment, the container, when it started (the timeout counts from there),
// and how far its output was reported. One file per attempt under `<data-dir>/attempts`,
// written when the container starts and as its output is reported, removed when the attempt's
// ending is in the outbox.

#include <cstdint>
#include <string>
#include <vector>

#include "core/protocol.h"
#include "core/result.h"
#include "provider/log_cursor.h"

namespace unidesk::provider {

struct AttemptRecord {
  core::protocol::Assign assign;
  std::string container;
  std::int64_t started_unix_ms = 0;
  std::int64_t log_seq = 0;    // the last log chunk's number
  std::int64_t log_bytes = 0;  // output kept so far (the per-attempt cap counts it)
  bool log_truncated = false;
  LogCursor cursor;
};

std::string ToJson(const AttemptRecord& r);
core::Result<AttemptRecord, std::string> ParseAttemptRecord(std::string_view json);

class AttemptRecords {
 public:
  /// `dir` is created when missing.
  explicit AttemptRecords(std::string dir);
  /// Replaces the attempt's record (a temporary file renamed over it: never half written).
  /// A process crash keeps what was written; no fsync, since a machine crash takes the
  /// container too. Returns false when it could not be written.
  bool Save(const AttemptRecord& r) const;
  void Remove(const std::string& task, std::int64_t attempt) const;
  struct Loaded {
    std::vector<AttemptRecord> records;
    std::vector<std::string> unreadable;  // "file: why", each removed
  };
  Loaded LoadAll() const;

 private:
  std::string Path(const std::string& task, std::int64_t attempt) const;
  std::string dir_;
};

}  // namespace unidesk::provider
