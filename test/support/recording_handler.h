#pragma once
// A subscriber for tests: records each delivery (subscriber, position, stream, version, delivery
// order) in table `seen`, inside the subscription's transaction.

#include <atomic>
#include <string>

#include "core/subscription.h"

namespace unidesk::test {

/// Creates `seen` (no unique key, so a duplicate delivery would show up as a second row).
inline void CreateSeenTable(pqxx::connection& c) {
  pqxx::work tx(c);
  tx.exec(
      "CREATE TABLE IF NOT EXISTS seen (sub text, position bigint, stream_id text, "
      "stream_version bigint, seq bigserial)");
  tx.commit();
}

class RecordingHandler : public core::SubscriptionHandler {
 public:
  explicit RecordingHandler(std::string sub) : sub_(std::move(sub)) {}

  void Handle(pqxx::work& tx, const std::vector<core::RecordedEvent>& batch) override {
    std::string sql = "INSERT INTO seen (sub, position, stream_id, stream_version) VALUES ";
    for (std::size_t i = 0; i < batch.size(); ++i) {
      sql += (i ? ",(" : "(") + tx.quote(sub_) + "," + std::to_string(batch[i].position.value) +
             "," + tx.quote(batch[i].stream_id) + "," + std::to_string(batch[i].stream_version) +
             ")";
    }
    tx.exec(sql);
    if (fail_next_after_write.exchange(false)) throw std::runtime_error("simulated crash");
  }

  /// When set, the next batch writes its rows and then throws (a crash before commit).
  std::atomic<bool> fail_next_after_write{false};

 private:
  std::string sub_;
};

}  // namespace unidesk::test
