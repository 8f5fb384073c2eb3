#pragma once
// Durable subscription checkpoints, moved only by compare-and-set.

#include <pqxx/pqxx>
#include <string>

#include "core/event.h"
#include "core/result.h"

namespace unidesk::core {

/// Where a subscription stands and how many events it has taken.
struct Checkpoint {
  LogCursor cursor;
  std::int64_t events = 0;
};

enum class CheckpointError { kStale };

/// The checkpoint of `name`, creating it at the start of the log when missing.
Checkpoint LoadCheckpoint(pqxx::transaction_base& tx, const std::string& name);

/// Moves `name` from `expected` to `next`; kStale when someone else moved it (a second
/// instance, or a rebuild that reset it): the caller must roll back and reload.
Result<Unit, TypedError<CheckpointError>> AdvanceCheckpoint(pqxx::transaction_base& tx,
                                                            const std::string& name,
                                                            LogCursor expected, LogCursor next,
                                                            std::int64_t delivered);

/// Puts `name` back to the start of the log.
void ResetCheckpoint(pqxx::transaction_base& tx, const std::string& name);

}  // namespace unidesk::core
