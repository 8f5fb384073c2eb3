#pragma once
// Applies numbered SQL migrations and tells whether a database's schema matches this build.

#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "core/result.h"

namespace unidesk::core {

/// One migration as the migrator sees it (schema/ provides the embedded list).
struct MigrationSource {
  int version;
  std::string name;
  std::string sql;
};

enum class SchemaError {
  kOlder,             // pending migrations: run `unidesk migrate`
  kNewer,             // the database has migrations this build does not know
  kChecksumMismatch,  // an applied migration differs from this build's file
  kUnknownState,      // gaps or unexpected rows in schema_migrations
  kFailed,            // a migration's SQL failed (rolled back)
};

/// What the database holds compared with this build.
struct SchemaStatus {
  int database_version = 0;
  int code_version = 0;
  std::vector<std::string> pending;  // names of migrations not yet applied
};

using SchemaResult = Result<SchemaStatus, TypedError<SchemaError>>;

/// Compares the database with `migrations`. kOlder is not returned here (see `pending`).
SchemaResult InspectSchema(pqxx::connection& conn, const std::vector<MigrationSource>& migrations);

/// Applies the pending migrations, each in its own transaction, under a lock so two migrators
/// never interleave. Running it again is a no-op. The status returned lists what was applied.
SchemaResult Migrate(pqxx::connection& conn, const std::vector<MigrationSource>& migrations);

/// Ok when the database is exactly at this build's version; otherwise says what to run.
SchemaResult RequireCurrentSchema(pqxx::connection& conn,
                                  const std::vector<MigrationSource>& migrations);

}  // namespace unidesk::core
