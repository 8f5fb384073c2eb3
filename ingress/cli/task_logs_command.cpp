// `unidesk tasks logs ID [--attempt N] [--follow] [--json]`: an attempt's output from its
// task.log events (stream tasklog-<id>), in the order the node sent it; --follow tails it live
// until the attempt ends.

#include <chrono>
#include <cstdio>
#include <optional>
#include <pqxx/pqxx>
#include <thread>

#include "core/json.h"
#include "core/pg.h"
#include "ingress/api/task_queries.h"
#include "ingress/cli/commands.h"

namespace unidesk::ingress {

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
    for (;;) {
      std::optional<api::TaskLogPage> page;
      {
        pqxx::read_transaction tx(*conn);
        page = api::ReadTaskLog(tx, id, attempt, after, 10000);
      }
      if (!page) return Fail("no task " + id + " (`unidesk tasks list`)");
      attempt = page->attempt;  // the latest, once there is one, and then that one
      if (attempt == 0 && !follow) {
        std::fprintf(stderr, "task %s has not run yet (%s)\n", id.c_str(), page->state.c_str());
        return 0;
      }
      for (const auto& c : page->chunks) {
        if (json) {
          std::printf("%s\n", core::JsonObject()
                                  .Str("task", id)
                                  .Int("attempt", attempt)
                                  .Int("seq", c.seq)
                                  .Str("stream", c.stream)
                                  .Str("text", c.text)
                                  .Done()
                                  .c_str());
        } else {
          std::fputs(c.text.c_str(), stdout);
        }
      }
      std::fflush(stdout);
      after = page->next;
      if (!follow) return 0;
      if (page->complete) {
        if (!json) {
          std::fprintf(stderr, "[unidesk] attempt %lld ended: %s\n", attempt,
                       page->latest > attempt ? "a newer attempt started" : page->state.c_str());
        }
        return 0;
      }
      // A full page: read on at once; else wait for more output.
      if (page->chunks.size() < 10000) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  } catch (const pqxx::broken_connection& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}

}  // namespace unidesk::ingress
