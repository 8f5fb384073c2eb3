// The task lifecycle's decisions, table by table: folds, node reports (fencing, order,
// repeats), endings with the retry policy, lost attempts and manual retries.

#include "core/task_lifecycle.h"

#include <doctest/doctest.h>

#include "core/json.h"

using namespace unidesk::core;
using unidesk::core::protocol::TaskReport;

namespace {

const std::string kTask = "6f1c2b1e-8d4a-5c3b-9a7e-1d2c3b4a5f60";

std::string Spec(const std::string& retry = R"({"max_attempts":3,"on":["lost"]})") {
  return R"({"code_repo_url":"https://g/c.git","code_commit_id":"0123456789abcdef0123456789abcdef01234567",)"
         R"("env_repo_url":"https://g/e.git","env_commit_id":"0123456789abcdef0123456789abcdef01234567",)"
         R"("command":["true"],"retry":)" +
         retry + "}";
}

TaskEventView Submitted(const std::string& retry = R"({"max_attempts":3,"on":["lost"]})") {
  return {"task.submitted",
          JsonObject().Str("task", kTask).Raw("spec", Spec(retry)).Str("submitted_by", "t").Done()};
}

TaskEventView Assigned(int attempt, const std::string& node) {
  return {"task.assigned",
          JsonObject().Str("task", kTask).Int("attempt", attempt).Str("node", node).Done()};
}

TaskEventView Simple(const std::string& type, int attempt = 1) {
  return {type, JsonObject().Str("task", kTask).Int("attempt", attempt).Done()};
}

TaskReport Rep(const std::string& state, int attempt = 1) {
  TaskReport r;
  r.task = kTask;
  r.attempt = attempt;
  r.state = state;
  return r;
}

std::vector<std::string> Types(const TaskDecision& d) {
  std::vector<std::string> out;
  for (const auto& e : d.events) out.push_back(e.type);
  return out;
}

}  // namespace

TEST_CASE("the fold follows the stream, retries included") {
  auto s = FoldTask({Submitted(), Assigned(1, "a"), Simple("task.accepted"), Simple("task.lost"),
                     Simple("task.requeued"), Assigned(2, "b")});
  CHECK(s.exists);
  CHECK(s.task_id == kTask);
  CHECK(s.state == "assigned");
  CHECK(s.attempt == 2);
  CHECK(s.node == "b");
  CHECK(s.retry.max_attempts == 3);
  CHECK(s.retry.on_lost);
  CHECK_FALSE(s.retry.on_failed);
  CHECK_FALSE(FoldTask({}).exists);
}

TEST_CASE("progress reports move forwards only; repeats and older states append nothing") {
  auto s = FoldTask({Submitted(), Assigned(1, "a")});
  CHECK(Types(DecideReport(s, "a", Rep("accepted"))) == std::vector<std::string>{"task.accepted"});
  auto running = FoldTask({Submitted(), Assigned(1, "a"), Simple("task.running")});
  auto late = DecideReport(running, "a", Rep("accepted"));
  CHECK(late.rejected.empty());
  CHECK(late.events.empty());
  auto prep = FoldTask(
      {Submitted(), Assigned(1, "a"), {"task.preparing", JsonObject().Str("phase", "git").Done()}});
  auto build = Rep("preparing");
  build.phase = "build";
  CHECK(Types(DecideReport(prep, "a", build)) == std::vector<std::string>{"task.preparing"});
  auto again = Rep("preparing");
  again.phase = "git";
  CHECK(DecideReport(prep, "a", again).events.empty());
  // The report of the container start carries what the node cached.
  auto run = Rep("running");
  run.image_built = false;
  run.prepare_ms = 321;
  auto d = DecideReport(prep, "a", run);
  REQUIRE(d.events.size() == 1);
  JsonReader data(d.events[0].data_json);
  CHECK(data.Int("prepare_ms") == 321);
  CHECK(data.Raw("image_built") == "false");
  CHECK_FALSE(d.attempt_ended);
}

TEST_CASE("reports of another attempt, another node or an ended attempt are rejected") {
  auto s = FoldTask({Submitted(), Assigned(1, "a"), Simple("task.lost"), Simple("task.requeued"),
                     Assigned(2, "b")});
  struct Case {
    const char* name;
    std::string node;
    int attempt;
  } cases[] = {{"superseded attempt", "a", 1},
               {"right attempt, wrong node", "a", 2},
               {"future attempt", "b", 3}};
  for (const auto& c : cases) {
    CAPTURE(c.name);
    auto d = DecideReport(s, c.node, Rep("succeeded", c.attempt));
    CHECK_FALSE(d.rejected.empty());
    CHECK(d.events.empty());
  }
  auto ended = FoldTask({Submitted(), Assigned(1, "a"), Simple("task.succeeded")});
  CHECK(DecideReport(ended, "a", Rep("failed")).rejected.find("already ended") !=
        std::string::npos);
  CHECK_FALSE(DecideReport(FoldTask({}), "a", Rep("running")).rejected.empty());
}

TEST_CASE("endings: class and blame, then the retry policy") {
  struct Case {
    const char* name;
    std::string retry;
    std::string state, failure;
    int attempt;
    std::vector<std::string> types;
    std::string blame;
  } cases[] = {
      {"success",
       R"({"max_attempts":3,"on":["lost"]})",
       "succeeded",
       "",
       1,
       {"task.succeeded"},
       ""},
      {"exit, not covered",
       R"({"max_attempts":3,"on":["lost"]})",
       "failed",
       "exit",
       1,
       {"task.failed"},
       "task"},
      {"exit, covered",
       R"({"max_attempts":3,"on":["failed"]})",
       "failed",
       "exit",
       1,
       {"task.failed", "task.requeued"},
       "task"},
      {"build error counts as failed",
       R"({"max_attempts":2,"on":["failed"]})",
       "failed",
       "build",
       1,
       {"task.failed", "task.requeued"},
       "infrastructure"},
      {"covered but attempts used up",
       R"({"max_attempts":2,"on":["failed"]})",
       "failed",
       "exit",
       2,
       {"task.failed"},
       "task"},
      {"timeout, covered",
       R"({"max_attempts":3,"on":["timed_out"]})",
       "timed_out",
       "timeout",
       1,
       {"task.timed_out", "task.requeued"},
       "task"},
      {"docker down is lost",
       R"({"max_attempts":3,"on":["lost"]})",
       "failed",
       "runtime",
       1,
       {"task.failed", "task.requeued"},
       "infrastructure"},
      {"agent restart: lost",
       R"({"max_attempts":3,"on":["lost"]})",
       "lost",
       "lost",
       1,
       {"task.lost", "task.requeued"},
       "infrastructure"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    std::vector<TaskEventView> events{Submitted(c.retry)};
    for (int a = 1; a <= c.attempt; ++a) {
      if (a > 1) events.push_back(Simple("task.requeued", a - 1));
      events.push_back(Assigned(a, "n"));
    }
    events.push_back(Simple("task.running", c.attempt));
    auto r = Rep(c.state, c.attempt);
    r.failure = c.failure;
    auto d = DecideReport(FoldTask(events), "n", r);
    CHECK(d.rejected.empty());
    CHECK(Types(d) == c.types);
    CHECK(d.attempt_ended);
    if (!c.blame.empty()) CHECK(JsonReader(d.events[0].data_json).Str("blame") == c.blame);
    if (c.types.size() == 2) {
      CHECK(JsonReader(d.events[1].data_json).Int("next_attempt") == c.attempt + 1);
    }
  }
}

TEST_CASE("a cancelled task is never retried; a lost one that was being cancelled ends cancelled") {
  auto s = FoldTask({Submitted(R"({"max_attempts":3,"on":["lost","failed"]})"),
                     Assigned(1, "a"),
                     Simple("task.running"),
                     {"task.cancel_requested", JsonObject().Str("reason", "wrong data").Done()}});
  auto failed = Rep("failed");
  failed.failure = "exit";
  CHECK(Types(DecideReport(s, "a", failed)) == std::vector<std::string>{"task.failed"});
  auto cancelled = DecideReport(s, "a", Rep("cancelled"));
  CHECK(Types(cancelled) == std::vector<std::string>{"task.cancelled"});
  CHECK(JsonReader(cancelled.events[0].data_json).Str("reason") == "wrong data");
  auto lost = DecideLost(s, "a", 1, "the node went offline");
  CHECK(Types(lost) == std::vector<std::string>{"task.cancelled"});
}

TEST_CASE("lost: only the live attempt on that node") {
  auto s = FoldTask({Submitted(), Assigned(1, "a"), Simple("task.accepted")});
  CHECK(Types(DecideLost(s, "a", 1, "offline")) ==
        std::vector<std::string>{"task.lost", "task.requeued"});
  CHECK(DecideLost(s, "b", 1, "offline").events.empty());
  CHECK(DecideLost(s, "a", 2, "offline").events.empty());
  auto done = FoldTask({Submitted(), Assigned(1, "a"), Simple("task.succeeded")});
  CHECK(DecideLost(done, "a", 1, "offline").events.empty());
  auto last = FoldTask({Submitted(R"({"max_attempts":1,"on":["lost"]})"), Assigned(1, "a")});
  CHECK(Types(DecideLost(last, "a", 1, "offline")) == std::vector<std::string>{"task.lost"});
}

TEST_CASE("manual retry: ended tasks only") {
  auto ended = FoldTask({Submitted(), Assigned(1, "a"), Simple("task.failed")});
  auto d = DecideManualRetry(ended, "cli:alice");
  CHECK(Types(d) == std::vector<std::string>{"task.requeued"});
  CHECK(JsonReader(d.events[0].data_json).Str("by") == "cli:alice");
  CHECK_FALSE(DecideManualRetry(FoldTask({Submitted(), Assigned(1, "a")}), "x").rejected.empty());
  CHECK_FALSE(DecideManualRetry(FoldTask({}), "x").rejected.empty());
  CHECK(FoldTask({Submitted(), Assigned(1, "a"), Simple("task.failed"), Simple("task.requeued")})
            .state == "queued");
}
