#pragma once
// The SQL migrations of schema/, embedded into every binary at build time.

#include <string>
#include <vector>

namespace unidesk::schema {

/// One numbered migration; versions are dense and start at 1.
struct Migration {
  int version;
  std::string name;
  std::string sql;
};

/// All migrations known to this build, in version order.
const std::vector<Migration>& EmbeddedMigrations();

}  // namespace unidesk::schema
