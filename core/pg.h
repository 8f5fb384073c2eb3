#pragma once
// Postgres connection helpers: the one place that classifies libpqxx exceptions.

#include <cstdint>
#include <memory>
#include <pqxx/pqxx>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace unidesk::core {

/// Opens a connection; throws pqxx::broken_connection when Postgres is unreachable. Its
/// statements are always planned for their arguments and the tables as they are now
/// (plan_cache_mode = force_custom_plan): see ExecPrepared.
std::unique_ptr<pqxx::connection> Connect(const std::string& conninfo);

/// True when `e` means the connection (or the server) went away, so a reconnect may help.
bool IsConnectionLost(const std::exception& e);

/// True when the outcome of a COMMIT that threw `e` is unknown (the server may have committed).
bool IsCommitInDoubt(const std::exception& e);

/// The SQLSTATE of `e` when it carries one, else "".
std::string SqlState(const std::exception& e);

/// `values` as a Postgres array literal: {"a","b"}, NULLs as NULL, quotes and backslashes escaped.
std::string PgArrayLiteral(const std::vector<std::string>& values);

/// Runs `sql` as the prepared statement `name` of tx's connection: Postgres parses and analyzes
/// it once per connection instead of on every call (the hot paths run it thousands of times a
/// second). It is still planned on every call (Connect forces custom plans): a generic plan made
/// while a table was young (a sequential scan of a few pages) would stay cached as the table
/// grows, until the next ANALYZE. libpqxx prepares it on first use and again on a new
/// connection; one name must always carry the same `sql`.
template <typename... Args>
pqxx::result ExecPrepared(pqxx::transaction_base& tx, const std::string& name,
                          const std::string& sql, Args&&... args) {
  tx.conn().prepare(name, sql);
  return tx.exec_prepared(name, std::forward<Args>(args)...);
}

/// A statement taking transaction-scoped advisory locks on all `keys`, in key order, so two
/// transactions locking overlapping sets never deadlock. Plain SQL with the keys inlined, for a
/// pqxx::pipeline (which sends plain SQL) that takes the locks and reads under them in one
/// round trip.
std::string LockAllInOrderSql(pqxx::transaction_base& tx, const std::set<std::int64_t>& keys);

}  // namespace unidesk::core
