// `unidesk tasks logs ID [--attempt N] [--follow] [--json]`: an attempt's output from its
// task.log events (stream tasklog-<id>), in the order the node sent it; --follow tails it live
// until the attempt ends.

#include <chrono>
#include <cstdio>
#include <pqxx/pqxx>
#include <thread>

#include "core/json.h"
#include "core/pg.h"
#include "ingress/cli/commands.h"

namespace unidesk::ingress {

namespace {

bool IsEnd(const std::string& state) {
  return state == "succeeded" || state == "failed" || state == "timed_out" ||
         state == "cancelled" || state == "lost";
}

}  // namespace

int RunTasksLogs(const CliContext& ctx, const Args& args) {
  bool json = args.Has("json");
  bool follow = args.Has("follow");
  long long want_attempt = 0;
  if (auto a = args.Get("attempt")) {
    try {
      want_attempt = std::stoll(*a);
    } catch (const std::exception&) {
      want_attempt = -1;
    }
    if (want_attempt <= 0) return Fail("--attempt: expected a positive number", 2);
  }
  try {
    auto conn = core::Connect(ctx.conninfo);
    std::string id;
    {
      pqxx::read_transaction tx(*conn);
      auto resolved = ResolveTaskRef(tx, args.positional.at(2));
      if (!resolved.ok()) return Fail(resolved.error().message);
      id = resolved.value();
    }
    std::int64_t after = -1;  // the last stream version printed
    long long attempt = want_attempt;
    bool last_read = false;
    for (;;) {
      std::string state;
      long long current = 0;
      {
        pqxx::read_transaction tx(*conn);
        auto t = tx.exec_params("SELECT state, attempt FROM tasks WHERE id = $1::uuid", id);
        if (t.empty()) return Fail("no task " + id + " (`unidesk tasks list`)");
        state = t[0][0].as<std::string>();
        current = t[0][1].as<long long>();
        if (attempt == 0) attempt = current;  // the latest attempt by default
        if (attempt == 0 && !follow) {
          std::fprintf(stderr, "task %s has not run yet (%s)\n", id.c_str(), state.c_str());
          return 0;
        }
        auto rows = tx.exec_params(
            "SELECT stream_version, data->>'stream', data->>'text', (data->>'seq')::bigint "
            "FROM events WHERE stream_id = $1 AND stream_version > $2 "
            "  AND (data->>'attempt')::bigint = $3 ORDER BY stream_version",
            "tasklog-" + id, after, attempt);
        for (const auto& r : rows) {
          after = r[0].as<std::int64_t>();
          if (json) {
            std::printf("%s\n", core::JsonObject()
                                    .Str("task", id)
                                    .Int("attempt", attempt)
                                    .Int("seq", r[3].as<std::int64_t>())
                                    .Str("stream", r[1].c_str())
                                    .Str("text", r[2].c_str())
                                    .Done()
                                    .c_str());
          } else {
            std::fputs(r[2].c_str(), stdout);
          }
        }
        std::fflush(stdout);
      }
      bool over = attempt > 0 && (current > attempt || (current == attempt && IsEnd(state)) ||
                                  (current == attempt && state == "queued"));
      if (!follow) return 0;
      if (last_read) {
        if (!json) {
          std::fprintf(stderr, "[unidesk] attempt %lld ended: %s\n", attempt,
                       current > attempt ? "a newer attempt started" : state.c_str());
        }
        return 0;
      }
      // The attempt's last chunks come before its ending report: one more read gets them all.
      if (over) {
        last_read = true;
        continue;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  } catch (const pqxx::broken_connection& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}

}  // namespace unidesk::ingress
