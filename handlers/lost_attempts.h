#pragma once
// Attempts whose node can no longer run them end as lost (task.lost, then task.requeued when
// the retry policy covers it): the node went offline or dormant (the liveness monitor's window),
// its token was revoked, or it did not acknowledge the assignment in time. Part of the
// scheduler role: the placement is released in the same transaction, so the capacity and the
// task return to the pool together.

#include <chrono>
#include <pqxx/pqxx>

#include "core/event_store.h"
#include "core/log.h"

namespace unidesk::handlers {

/// One sweep; returns the attempts it ended. Each in its own transaction under the task
/// stream's lock, so copies sweeping at once decide each attempt once. Throws what libpqxx
/// throws.
int SweepLostAttempts(pqxx::connection& conn, core::EventStore& store,
                      std::chrono::milliseconds accept_timeout, const core::LoggerPtr& log);

}  // namespace unidesk::handlers
