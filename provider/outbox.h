#pragma once
// The agent's outbox: every report gets the next sequence number and is kept on disk until the
// server acknowledges it, so neither a dropped connection nor an agent restart loses one. The
// server applies each (outbox id, seq) once, so resending is always safe.

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace unidesk::provider {

struct OutboxEntry {
  std::int64_t seq = 0;
  std::string kind;
  std::string body_json;
};

class Outbox {
 public:
  /// Opens (or creates) the outbox in `dir`. Throws std::runtime_error when it cannot.
  explicit Outbox(std::string dir);
  const std::string& id() const { return id_; }
  /// Stores a report durably (fsync) and returns it with its sequence number.
  OutboxEntry Add(const std::string& kind, const std::string& body_json);
  /// Forgets `seq` (acknowledged by the server).
  void Ack(std::int64_t seq);
  /// Unacknowledged reports in sequence order.
  std::vector<OutboxEntry> Pending() const;

 private:
  std::string EntryPath(std::int64_t seq) const;
  std::string dir_;
  std::string id_;
  std::int64_t next_ = 1;
  mutable std::mutex mu_;
};

}  // namespace unidesk::provider
