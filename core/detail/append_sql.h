#pragma once
// Runs a planned group of appends inside one Postgres transaction.

#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "core/event_store.h"

namespace unidesk::core::detail {

/// One request of a group and the fingerprint its idempotency key protects.
struct GroupItem {
  const AppendRequest* request;
  std::string hash;
  bool ids_supplied = false;  // the caller chose event ids (a retry may reuse them)
};

/// Takes the sorted advisory locks of every stream and key first (so the transaction's xid is
/// assigned only after them) and reads versions, keys and supplied ids, all in one round trip;
/// plans; inserts the events and the keys in one statement. With `check_first_write`, every item
/// is refused (kTransactionAlreadyWrote) when `tx` has written before. Returns one result per
/// item; throws only what libpqxx throws (the caller maps it).
std::vector<AppendResult> ExecuteGroup(pqxx::work& tx, const EventCatalogue& catalogue,
                                       const std::vector<GroupItem>& items, bool check_first_write);

}  // namespace unidesk::core::detail
