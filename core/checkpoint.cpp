#include "core/checkpoint.h"

#include "core/pg.h"

namespace unidesk::core {

Checkpoint LoadCheckpoint(pqxx::transaction_base& tx, const std::string& name) {
  tx.exec_params("INSERT INTO subscriptions (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                 name);
  auto r = tx.exec_params("SELECT tx_id::text, position, events FROM subscriptions WHERE name = $1",
                          name);
  return {{r[0][0].as<std::uint64_t>(), r[0][1].as<std::int64_t>()}, r[0][2].as<std::int64_t>()};
}

Result<Unit, TypedError<CheckpointError>> AdvanceCheckpoint(pqxx::transaction_base& tx,
                                                            const std::string& name,
                                                            LogCursor expected, LogCursor next,
                                                            std::int64_t delivered) {
  auto r = ExecPrepared(
      tx, "checkpoint_advance",
      "UPDATE subscriptions SET tx_id = $4::text::xid8, position = $5, events = events + $6, "
      "updated_at = now() WHERE name = $1 AND tx_id = $2::text::xid8 AND position = $3",
      name, std::to_string(expected.tx_id), expected.position, std::to_string(next.tx_id),
      next.position, delivered);
  if (r.affected_rows() != 1) {
    return TypedError<CheckpointError>{CheckpointError::kStale,
                                       "checkpoint of '" + name + "' was moved by someone else"};
  }
  return Unit{};
}

void ResetCheckpoint(pqxx::transaction_base& tx, const std::string& name) {
  tx.exec_params(
      "INSERT INTO subscriptions (name) VALUES ($1) ON CONFLICT (name) DO UPDATE "
      "SET tx_id = '0', position = 0, events = 0, updated_at = now()",
      name);
}

}  // namespace unidesk::core
