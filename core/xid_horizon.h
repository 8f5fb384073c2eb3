#pragma once
// Guards delivery order across a dump/restore: a restored log must not hold transaction ids
// ahead of the cluster's, or new events would sort before old ones.

#include <cstdint>
#include <optional>
#include <pqxx/pqxx>
#include <string>

namespace unidesk::core {

/// The smallest xid epoch that puts the cluster's next xid after every tx_id in the log.
std::uint32_t EpochAbove(std::uint64_t max_tx_id);

/// nullopt when the cluster's next transaction id is beyond every tx_id in `events`; otherwise
/// what is wrong and the command that fixes it (docs/runbook.md, "Restore").
std::optional<std::string> CheckXidHorizon(pqxx::transaction_base& tx);

}  // namespace unidesk::core
