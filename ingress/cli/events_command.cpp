#include <csignal>
#include <cstdio>
#include <thread>

#include "core/event_reader.h"
#include "core/json.h"
#include "core/pg.h"
#include "ingress/cli/commands.h"

namespace unidesk::ingress {
namespace {

volatile std::sig_atomic_t g_interrupted = 0;  // set by SIGINT while following

void Print(const core::RecordedEvent& e, bool json) {
  if (json) {
    std::printf("%s\n", core::JsonObject()
                            .Int("position", e.position.value)
                            .Str("stream_id", e.stream_id)
                            .Int("stream_version", e.stream_version)
                            .Str("type", e.type)
                            .Int("schema_version", e.schema_version)
                            .Str("event_id", e.event_id)
                            .Str("recorded_at", e.recorded_at)
                            .Str("actor", e.metadata.actor)
                            .Str("correlation_id", e.metadata.correlation_id)
                            .Str("causation_id", e.metadata.causation_id)
                            .Str("source", e.metadata.source)
                            .Raw("data", e.data_json)
                            .Done()
                            .c_str());
  } else {
    std::printf("#%-8lld %s  %s@%lld  %s  by %s  %s\n", static_cast<long long>(e.position.value),
                e.recorded_at.c_str(), e.stream_id.c_str(),
                static_cast<long long>(e.stream_version), e.type.c_str(),
                e.metadata.actor.empty() ? "-" : e.metadata.actor.c_str(), e.data_json.c_str());
  }
  std::fflush(stdout);
}

bool Matches(const core::RecordedEvent& e, const core::EventFilter& f, std::int64_t since) {
  return e.position.value > since && (!f.stream_id || *f.stream_id == e.stream_id) &&
         (!f.type || *f.type == e.type);
}

}  // namespace

int RunEventsTail(const CliContext& ctx, const Args& args) {
  core::EventFilter filter;
  filter.stream_id = args.Get("stream");
  filter.type = args.Get("type");
  bool json = args.Has("json");
  std::int64_t limit = 20;
  std::optional<std::int64_t> since;
  try {
    if (auto s = args.Get("since")) since = std::stoll(*s);
    if (auto l = args.Get("limit")) limit = std::stoll(*l);
  } catch (const std::exception&) {
    return Fail("--since and --limit take whole numbers", 2);
  }
  if (limit <= 0 || (since && *since < 0)) return Fail("--since and --limit must be >= 0", 2);
  try {
    auto conn = core::Connect(ctx.conninfo);
    std::int64_t after;
    {
      pqxx::read_transaction tx(*conn);
      // Without --since: the last `limit` matching events.
      after = since
                  ? *since
                  : std::max<std::int64_t>(
                        0, tx.exec_params("SELECT coalesce(min(position) - 1, 0) FROM (SELECT "
                                          "position FROM events WHERE ($1::text IS NULL OR "
                                          "stream_id = $1) AND ($2::text IS NULL OR type = $2) "
                                          "ORDER BY position DESC LIMIT $3) t",
                                          filter.stream_id ? filter.stream_id->c_str() : nullptr,
                                          filter.type ? filter.type->c_str() : nullptr, limit)[0][0]
                               .as<std::int64_t>());
    }
    if (!args.Has("follow")) {
      pqxx::read_transaction tx(*conn);
      auto events = core::ReadByPosition(tx, ctx.catalogue, core::Position{after},
                                         static_cast<int>(limit), filter);
      for (const auto& e : events) Print(e, json);
      return 0;
    }
    // Following reads in delivery order, so an event whose transaction commits late is still
    // shown. Every event after `after`, committed or still to come, has a tx id at least the
    // smallest among those already there or the oldest running transaction's.
    core::LogCursor cursor;
    {
      pqxx::read_transaction tx(*conn);
      auto r = tx.exec_params(
          "SELECT least(min(tx_id), pg_snapshot_xmin(pg_current_snapshot()))::text FROM events "
          "WHERE position > $1",
          after);
      cursor = {r[0][0].as<std::uint64_t>(), 0};
    }
    std::signal(SIGINT, [](int) { g_interrupted = 1; });
    while (!g_interrupted) {
      core::SafeBatch batch;
      {
        pqxx::read_transaction tx(*conn);
        batch = core::ReadAfterCursor(tx, ctx.catalogue, cursor, 1000);
      }
      for (const auto& e : batch.events) {
        if (Matches(e, filter, after)) Print(e, json);
        cursor = e.cursor();
      }
      if (batch.events.size() < 1000) {
        std::this_thread::sleep_for(std::chrono::milliseconds(batch.held_back ? 5 : 200));
      }
    }
    return 0;
  } catch (const std::exception& e) {
    if (core::IsConnectionLost(e)) return Fail(DatabaseDown(ctx.conninfo, e));
    return Fail(e.what());
  }
}

}  // namespace unidesk::ingress
