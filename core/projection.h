#pragma once
// The projection engine: a projector is a pure Apply(event) -> row changes; the engine writes the
// rows and the checkpoint in one transaction, and rebuilds by truncate + replay.

#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "core/event.h"
#include "core/subscription.h"

namespace unidesk::core {

/// One change to a read-model row. Values are text literals Postgres casts to the column type.
struct RowChange {
  enum class Op { kInsert, kUpsert, kDelete };
  Op op = Op::kInsert;
  std::string table;
  std::vector<std::string> columns;                // kDelete: the key columns
  std::vector<std::optional<std::string>> values;  // nullopt = NULL
  std::vector<std::string> key_columns;            // kUpsert: the conflict target
};

/// What a projector produced for a batch.
class RowChanges {
 public:
  void Insert(std::string table, std::vector<std::string> columns,
              std::vector<std::optional<std::string>> values);
  void Upsert(std::string table, std::vector<std::string> key_columns,
              std::vector<std::string> columns, std::vector<std::optional<std::string>> values);
  void Delete(std::string table, std::vector<std::string> key_columns,
              std::vector<std::optional<std::string>> key_values);
  const std::vector<RowChange>& changes() const { return changes_; }
  void clear() { changes_.clear(); }

 private:
  std::vector<RowChange> changes_;
};

/// A read model. Apply must be pure: same events in, same rows out (rebuild relies on it).
class Projector {
 public:
  virtual ~Projector() = default;
  /// Also the subscription (checkpoint) name.
  virtual std::string name() const = 0;
  /// Tables the projector owns; a rebuild truncates them.
  virtual std::vector<std::string> tables() const = 0;
  /// The event types Apply reads (SubscriptionOptions::types: names, or prefixes ending in
  /// '.'); the others never reach it. Empty: every event.
  virtual std::vector<std::string> types() const { return {}; }
  /// False when Apply reads the events' metadata alone (SubscriptionOptions::data).
  virtual bool reads_data() const { return true; }
  virtual void Apply(const RecordedEvent& event, RowChanges& out) const = 0;
};

/// Writes `changes` as if in order: consecutive inserts into one table share one COPY; in a run
/// of consecutive upserts, those on one row merge into one and rows of one shape share one
/// statement (read-model tables have no foreign keys or triggers that would see the order).
void WriteRowChanges(pqxx::transaction_base& tx, const std::vector<RowChange>& changes);

/// Adapts a Projector to the subscription engine.
class ProjectionHandler : public SubscriptionHandler {
 public:
  explicit ProjectionHandler(const Projector& projector) : projector_(projector) {}
  void Handle(pqxx::work& tx, const std::vector<RecordedEvent>& batch) override;

 private:
  const Projector& projector_;
  RowChanges scratch_;
};

/// Empties the projector's tables and moves its checkpoint to the start, in `tx`. Whoever owns
/// the projector then replays from the first event (a live owner's next checkpoint write is
/// refused as stale, so it reloads and replays).
void ResetProjection(pqxx::transaction_base& tx, const Projector& projector);

}  // namespace unidesk::core
