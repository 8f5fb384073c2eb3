#include <cstdio>

#include "core/event_store.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/migrator.h"
#include "core/pg.h"
#include "core/xid_horizon.h"
#include "ingress/cli/commands.h"
#include "ingress/schema_sources.h"

namespace unidesk::ingress {

int RunMigrate(const CliContext& ctx, const Args& args) {
  std::unique_ptr<pqxx::connection> conn;
  try {
    conn = core::Connect(ctx.conninfo);
  } catch (const std::exception& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  }
  auto migrations = SchemaSources();
  auto result = [&]() -> core::SchemaResult {
    try {
      return core::Migrate(*conn, migrations);
    } catch (const std::exception& e) {
      return core::TypedError<core::SchemaError>{core::SchemaError::kFailed,
                                                 DatabaseDown(ctx.conninfo, e)};
    }
  }();
  if (!result.ok()) {
    return Fail(result.error().message, result.error().code == core::SchemaError::kFailed ? 1 : 3);
  }
  const core::SchemaStatus& s = result.value();
  {
    pqxx::read_transaction tx(*conn);
    if (auto behind = core::CheckXidHorizon(tx)) return Fail(*behind, 3);
  }
  if (!s.pending.empty()) {
    std::string applied = "[";
    for (std::size_t i = 0; i < s.pending.size(); ++i) {
      applied += (i ? "," : "") + core::JsonQuote(s.pending[i]);
    }
    applied += "]";
    core::EventStore store({ctx.conninfo, 1, 1, true}, ctx.catalogue, ctx.log);
    core::NewEvent e;
    e.type = "schema.migrated";
    e.data_json = core::JsonObject()
                      .Int("from", s.database_version - static_cast<int>(s.pending.size()))
                      .Int("to", s.database_version)
                      .Raw("applied", applied)
                      .Done();
    e.metadata = {ctx.actor, core::NewUuid(), "", "cli"};
    auto r = store.Append({"schema", core::ExpectedVersion::Any(), {e}, std::nullopt});
    if (!r.ok()) return Fail("migrated, but recording the event failed: " + r.error().message);
  }
  if (args.Has("json")) {
    std::printf("%s\n", core::JsonObject()
                            .Int("version", s.database_version)
                            .Int("applied", static_cast<std::int64_t>(s.pending.size()))
                            .Done()
                            .c_str());
  } else if (s.pending.empty()) {
    std::printf("schema is current at version %d; nothing to apply\n", s.database_version);
  } else {
    for (const auto& name : s.pending) std::printf("applied %s\n", name.c_str());
    std::printf("schema is now at version %d\n", s.database_version);
  }
  return 0;
}

}  // namespace unidesk::ingress
