#pragma once
// Where the binaries find the database.

#include <cstdlib>
#include <optional>
#include <string>

/// The local cluster `ops/up` runs (var/pg, port 54329).
#define UNIDESK_DEFAULT_DB "host=127.0.0.1 port=54329 dbname=unidesk user=unidesk"

namespace unidesk::ingress {

/// --db, else $UNIDESK_DB, else the local cluster of ops/up.
inline std::string DatabaseFrom(const std::optional<std::string>& flag) {
  if (flag) return *flag;
  if (const char* env = std::getenv("UNIDESK_DB"); env && *env) return env;
  return UNIDESK_DEFAULT_DB;
}

}  // namespace unidesk::ingress
