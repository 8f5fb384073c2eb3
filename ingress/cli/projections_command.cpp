#include <cstdio>
#include <set>
#include <thread>

#include "core/event_reader.h"
#include "core/event_store.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/pg.h"
#include "core/projection.h"
#include "core/xid_horizon.h"
#include "ingress/cli/commands.h"
#include "ingress/cli/progress.h"
#include "projections/registry.h"

namespace unidesk::ingress {
namespace {

std::string KnownNames(const std::vector<std::unique_ptr<core::Projector>>& all) {
  std::string out;
  for (const auto& p : all) out += (out.empty() ? "" : ", ") + p->name();
  return out;
}

/// Appends one event about `projection` in its own transaction.
core::AppendResult Record(core::EventStore& store, const CliContext& ctx, const std::string& type,
                          const std::string& projection, std::string data,
                          const std::string& correlation) {
  core::NewEvent e;
  e.type = type;
  e.data_json = std::move(data);
  e.metadata = {ctx.actor, correlation, "", "cli"};
  return store.Append({"projection-" + projection, core::ExpectedVersion::Any(), {e}, {}});
}

}  // namespace

int RunProjectionsStatus(const CliContext& ctx, const Args& args) {
  bool json = args.Has("json");
  try {
    auto conn = core::Connect(ctx.conninfo);
    pqxx::read_transaction tx(*conn);
    // A projector of some types keeps, past what it skipped, a cursor at the horizon (position
    // 2^63-1): shown is the last event at or before its checkpoint, the last it has passed.
    auto rows = tx.exec(
        "SELECT s.name, coalesce((SELECT e.position FROM events e "
        "  WHERE (e.tx_id, e.position) <= (s.tx_id, s.position) "
        "  ORDER BY e.tx_id DESC, e.position DESC LIMIT 1), 0), s.events, "
        "to_char(s.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
        "(SELECT count(*) FROM events e WHERE (e.tx_id, e.position) > (s.tx_id, s.position)), "
        "coalesce((SELECT extract(epoch FROM now() - min(e.recorded_at)) FROM events e "
        "  WHERE (e.tx_id, e.position) > (s.tx_id, s.position)), 0) "
        "FROM subscriptions s ORDER BY s.name");
    // The oldest open write transaction holds delivery back for every subscriber.
    auto oldest = tx.exec(
        "SELECT pid, coalesce(datname, ''), extract(epoch FROM now() - xact_start) "
        "FROM pg_stat_activity WHERE backend_xid IS NOT NULL ORDER BY xact_start LIMIT 1");
    std::set<std::string> seen;
    if (!json)
      std::printf("%-16s %12s %12s %10s %10s  %s\n", "NAME", "POSITION", "EVENTS", "LAG", "LAG_S",
                  "UPDATED");
    for (const auto& r : rows) {
      seen.insert(r[0].c_str());
      if (json) {
        std::printf("%s\n", core::JsonObject()
                                .Str("name", r[0].c_str())
                                .Int("position", r[1].as<std::int64_t>())
                                .Int("events", r[2].as<std::int64_t>())
                                .Int("lag_events", r[4].as<std::int64_t>())
                                .Num("lag_seconds", r[5].as<double>())
                                .Str("updated_at", r[3].c_str())
                                .Done()
                                .c_str());
      } else {
        std::printf("%-16s %12s %12s %10s %10.1f  %s\n", r[0].c_str(), r[1].c_str(), r[2].c_str(),
                    r[4].c_str(), r[5].as<double>(), r[3].c_str());
      }
    }
    for (const auto& p : projections::AllProjectors()) {
      if (seen.count(p->name())) continue;
      if (json) {
        std::printf(
            "%s\n",
            core::JsonObject().Str("name", p->name()).Bool("started", false).Done().c_str());
      } else {
        std::printf("%-16s %12s  (never started: no unidesk-server has run it)\n",
                    p->name().c_str(), "-");
      }
    }
    if (!oldest.empty() && oldest[0][2].as<double>() > 1.0 && !json) {
      std::printf(
          "note: write transaction of pid %s in database '%s' has been open %.0f s; "
          "delivery waits for it\n",
          oldest[0][0].c_str(), oldest[0][1].c_str(), oldest[0][2].as<double>());
    }
    return 0;
  } catch (const std::exception& e) {
    if (core::IsConnectionLost(e)) return Fail(DatabaseDown(ctx.conninfo, e));
    return Fail(e.what());
  }
}

int RunProjectionsRebuild(const CliContext& ctx, const Args& args) {
  if (args.positional.size() != 3) return Fail("usage: unidesk projections rebuild NAME", 2);
  const std::string& name = args.positional[2];
  auto all = projections::AllProjectors();
  core::Projector* projector = nullptr;
  for (auto& p : all) {
    if (p->name() == name) projector = p.get();
  }
  if (projector == nullptr) {
    return Fail("unknown projection '" + name + "'; known: " + KnownNames(all), 2);
  }
  try {
    auto conn = core::Connect(ctx.conninfo);
    {
      pqxx::read_transaction tx(*conn);
      if (auto behind = core::CheckXidHorizon(tx)) return Fail(*behind, 3);
    }
    core::EventStore store({ctx.conninfo, 1, 1, true}, ctx.catalogue, ctx.log);
    std::string correlation = core::NewUuid();
    auto started = std::chrono::steady_clock::now();
    std::int64_t total;
    std::int64_t request_position;
    {
      pqxx::work tx(*conn);
      core::NewEvent e;
      e.type = "projection.rebuild_requested";
      e.data_json = core::JsonObject().Str("projection", name).Done();
      e.metadata = {ctx.actor, correlation, "", "cli"};
      auto r = store.AppendInTransaction(
          tx, {"projection-" + name, core::ExpectedVersion::Any(), {e}, std::nullopt});
      if (!r.ok()) return Fail(r.error().message);
      request_position = r.value().last.value;
      core::ResetProjection(tx, *projector);
      total = core::CountEvents(tx, projector->types());
      tx.commit();
      store.NotifyCommitted();
    }
    Progress progress("rebuild " + name, total);
    std::int64_t done = 0;
    // Replay here when no process owns the projector; otherwise follow the owner's replay,
    // and take over should the owner go away before it is done.
    core::ProjectionHandler handler(*projector);
    core::SubscriptionOptions options;
    options.name = name;
    options.conninfo = ctx.conninfo;
    options.types = projector->types();
    options.data = projector->reads_data() ? core::EventData::kRead : core::EventData::kSkip;
    options.batch_size = 5000;
    options.listen = false;
    core::Subscription sub(options, ctx.catalogue, handler, ctx.log);
    bool said_following = false;
    for (;;) {
      auto replayed = sub.TryCatchUp([&](std::int64_t n) { progress.Update(n); },
                                     std::chrono::milliseconds(200));
      if (replayed) {
        done = *replayed;
        break;
      }
      if (!said_following) {
        std::fprintf(stderr, "projection '%s' is owned by a running server; following its replay\n",
                     name.c_str());
        said_following = true;
      }
      pqxx::read_transaction tx(*conn);
      auto r = tx.exec_params(
          "SELECT s.events, (s.tx_id, s.position) >= (e.tx_id, e.position) FROM subscriptions "
          "s, events e WHERE s.name = $1 AND e.position = $2",
          name, request_position);
      done = r[0][0].as<std::int64_t>();
      if (r[0][1].as<bool>()) break;
      progress.Update(done);
    }
    progress.Finish(done);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    auto r = Record(
        store, ctx, "projection.rebuilt", name,
        core::JsonObject().Str("projection", name).Int("events", done).Num("seconds", secs).Done(),
        correlation);
    if (!r.ok()) return Fail("rebuilt, but recording the event failed: " + r.error().message);
    if (args.Has("json")) {
      std::printf("%s\n", core::JsonObject()
                              .Str("projection", name)
                              .Int("events", done)
                              .Num("seconds", secs)
                              .Done()
                              .c_str());
    } else {
      std::printf("rebuilt %s: %lld events in %.1f s\n", name.c_str(), static_cast<long long>(done),
                  secs);
    }
    return 0;
  } catch (const std::exception& e) {
    if (core::IsConnectionLost(e)) return Fail(DatabaseDown(ctx.conninfo, e));
    return Fail(e.what());
  }
}

}  // namespace unidesk::ingress
