#include "core/migrator.h"

#include <map>

#include "core/ids.h"

namespace unidesk::core {
namespace {

using Error = TypedError<SchemaError>;

void EnsureTable(pqxx::connection& conn) {
  pqxx::work tx(conn);
  tx.exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT "
      "NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())");
  tx.commit();
}

}  // namespace

SchemaResult InspectSchema(pqxx::connection& conn, const std::vector<MigrationSource>& migrations) {
  SchemaStatus status;
  status.code_version = migrations.empty() ? 0 : migrations.back().version;
  std::map<int, std::pair<std::string, std::string>> applied;
  {
    pqxx::read_transaction tx(conn);
    bool exists = tx.exec("SELECT to_regclass('schema_migrations') IS NOT NULL")[0][0].as<bool>();
    if (exists) {
      for (const auto& r : tx.exec("SELECT version, name, checksum FROM schema_migrations")) {
        applied[r[0].as<int>()] = {r[1].c_str(), r[2].c_str()};
      }
    }
  }
  std::map<int, const MigrationSource*> known;
  for (const auto& m : migrations) known[m.version] = &m;
  for (const auto& [version, row] : applied) {
    auto it = known.find(version);
    if (it == known.end()) {
      if (version > status.code_version) {
        return Error{SchemaError::kNewer,
                     "the database has migration " + std::to_string(version) + " (" + row.first +
                         ") but this build knows only up to " +
                         std::to_string(status.code_version) + ": run a newer unidesk"};
      }
      return Error{SchemaError::kUnknownState, "the database records migration " +
                                                   std::to_string(version) + " (" + row.first +
                                                   ") that this build does not have"};
    }
    if (Sha256Hex(it->second->sql) != row.second) {
      return Error{SchemaError::kChecksumMismatch,
                   "migration " + it->second->name +
                       " applied to the database differs from this build's file; restore the "
                       "file (landed migrations are never edited) or the database"};
    }
  }
  for (const auto& m : migrations) {
    if (applied.count(m.version)) {
      if (!status.pending.empty()) {
        return Error{SchemaError::kUnknownState, "migration " + m.name +
                                                     " is applied but an earlier one (" +
                                                     status.pending.front() + ") is not"};
      }
      status.database_version = m.version;
    } else {
      status.pending.push_back(m.name);
    }
  }
  return status;
}

SchemaResult Migrate(pqxx::connection& conn, const std::vector<MigrationSource>& migrations) {
  EnsureTable(conn);
  // A session lock: two migrators never interleave. Held across the per-migration transactions.
  const auto key = LockKey("unidesk", "migrate");
  pqxx::nontransaction(conn).exec_params("SELECT pg_advisory_lock($1)", key);
  struct Unlock {
    pqxx::connection& conn;
    std::int64_t key;
    ~Unlock() {
      try {
        pqxx::nontransaction(conn).exec_params("SELECT pg_advisory_unlock($1)", key);
      } catch (...) {
      }
    }
  } unlock{conn, key};

  SchemaResult before = InspectSchema(conn, migrations);
  if (!before.ok()) return before;
  SchemaStatus done = before.value();
  std::vector<std::string> applied;
  for (const auto& m : migrations) {
    if (m.version <= before.value().database_version) continue;
    try {
      pqxx::work tx(conn);
      tx.exec(m.sql);
      tx.exec_params("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1,$2,$3)",
                     m.version, m.name, Sha256Hex(m.sql));
      tx.commit();
    } catch (const pqxx::sql_error& e) {
      return Error{SchemaError::kFailed,
                   "migration " + m.name + " failed and was rolled back: " + e.what()};
    }
    applied.push_back(m.name);
    done.database_version = m.version;
  }
  done.pending = applied;  // for Migrate: what this call applied
  return done;
}

SchemaResult RequireCurrentSchema(pqxx::connection& conn,
                                  const std::vector<MigrationSource>& migrations) {
  SchemaResult r = InspectSchema(conn, migrations);
  if (!r.ok()) return r;
  if (!r.value().pending.empty()) {
    return Error{SchemaError::kOlder,
                 "the database schema is at version " + std::to_string(r.value().database_version) +
                     ", this build needs " + std::to_string(r.value().code_version) +
                     ": run `unidesk migrate`"};
  }
  return r;
}

}  // namespace unidesk::core
