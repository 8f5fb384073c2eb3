#include "core/xid_horizon.h"

namespace unidesk::core {

std::uint32_t EpochAbove(std::uint64_t max_tx_id) {
  return static_cast<std::uint32_t>(max_tx_id >> 32) + 1;
}

std::optional<std::string> CheckXidHorizon(pqxx::transaction_base& tx) {
  if (tx.exec("SELECT to_regclass('events') IS NULL")[0][0].as<bool>()) return std::nullopt;
  auto r =
      tx.exec("SELECT max(tx_id)::text, pg_snapshot_xmax(pg_current_snapshot())::text FROM events");
  if (r[0][0].is_null()) return std::nullopt;
  auto max_tx = r[0][0].as<std::uint64_t>();
  auto next = r[0][1].as<std::uint64_t>();
  if (next > max_tx) return std::nullopt;
  return "the event log holds transaction ids up to " + std::to_string(max_tx) +
         " but this cluster's next is " + std::to_string(next) +
         " (restored from a dump?); new events would sort before old ones. Stop the cluster and "
         "raise its xid epoch to " +
         std::to_string(EpochAbove(max_tx)) + ": ops/pgcluster raise-epoch DIR " +
         std::to_string(EpochAbove(max_tx)) + " (or pg_resetwal -e), see docs/runbook.md";
}

}  // namespace unidesk::core
