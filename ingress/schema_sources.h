#pragma once
// This build's migrations, as the core migrator takes them.

#include <vector>

#include "core/migrator.h"
#include "schema/migrations.h"

namespace unidesk::ingress {

inline std::vector<core::MigrationSource> SchemaSources() {
  std::vector<core::MigrationSource> out;
  for (const auto& m : schema::EmbeddedMigrations()) out.push_back({m.version, m.name, m.sql});
  return out;
}

}  // namespace unidesk::ingress
