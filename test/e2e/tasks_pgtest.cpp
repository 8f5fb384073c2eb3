// Tasks run for real, end to end: submitted through the CLI, placed by the scheduler, handed to
// a real unidesk-provider over its session, built and run on a real Docker engine (ops/dockerd)
// from git repositories made by the test, output read back with `unidesk tasks logs`, every
// lifecycle event on the bus in order. Then what users meet: the second run of the same pins
// fetches and builds nothing; `logs --follow` tails a running task; cancel reaches the node;
// a failing task says so and `tasks retry` runs it again; a node killed mid-task loses the
// attempt, which the retry policy runs on another node, and the agent restarted too late has
// its container removed, its stale report rejected and recorded; an agent that restarts within the
// offline window (killed, or stopped with --on-stop keep-running) follows its running container
// on, and the task ends in its first attempt with every line of output once.

#include <doctest/doctest.h>

#include <algorithm>
#include <csignal>
#include <thread>

#include "core/json.h"
#include "test/e2e/node_support.h"
#include "test/e2e/task_repos.h"

using namespace unidesk;
using namespace unidesk::test;
using namespace unidesk::test::e2e;

namespace {

std::string Field(const std::string& conninfo, const std::string& id, const std::string& col) {
  return Text(conninfo,
              "SELECT coalesce((SELECT " + col + "::text FROM tasks WHERE id = '" + id + "'), '')");
}

bool WaitField(const std::string& conninfo, const std::string& id, const std::string& col,
               const std::string& value, int seconds = 60) {
  bool ok = WaitUntil([&] { return Field(conninfo, id, col) == value; },
                      std::chrono::seconds(seconds), std::chrono::milliseconds(50));
  if (!ok) {
    MESSAGE("task " << id << ": " << col << " = '" << Field(conninfo, id, col) << "', state "
                    << Field(conninfo, id, "state") << ", reason '" << Field(conninfo, id, "reason")
                    << "', waiting '" << Field(conninfo, id, "waiting_reason") << "'");
  }
  return ok;
}

/// The task stream's event types in order, with the phase of task.preparing.
std::string Lifecycle(const std::string& conninfo, const std::string& id) {
  return Text(conninfo,
              "SELECT string_agg(type || coalesce(':' || (data->>'phase'), ''), ',' "
              "ORDER BY stream_version) FROM events WHERE stream_id = 'task-" +
                  id + "'");
}

std::string EventData(const std::string& conninfo, const std::string& id, const std::string& type,
                      int attempt = 1) {
  return Text(conninfo, "SELECT coalesce((SELECT data::text FROM events WHERE stream_id = 'task-" +
                            id + "' AND type = '" + type + "' AND (data->>'attempt')::int = " +
                            std::to_string(attempt) + " LIMIT 1), '{}')");
}

struct Platform {
  TestDatabase db;
  Dockerd docker;
  TaskRepos repos;
  Server server;
  std::vector<std::unique_ptr<ChildProcess>> providers;
  std::map<std::string, std::string> data_dirs, tokens;

  /// `offline_after`: how long a silent node stays placed (FastLiveness: 1.5 s).
  explicit Platform(const std::string& offline_after = "") {
    std::vector<std::string> flags = FastLiveness();
    if (!offline_after.empty()) {
      auto at = std::find(flags.begin(), flags.end(), "--offline-after");
      at[1] = offline_after;
    }
    for (const char* f :
         {"--allow-file-urls", "--schedule-interval", "20ms", "--accept-timeout", "15s"}) {
      flags.push_back(f);
    }
    server = StartNodeServer(db.conninfo(), flags);
    if (server.port <= 0) throw std::runtime_error("the server did not start");
  }
  ChildProcess& Provider(const std::string& name, std::vector<std::string> extra = {}) {
    if (!tokens.count(name)) {
      tokens[name] = AddNode(db.conninfo(), name);
      data_dirs[name] = TempPath("data-" + name);
    }
    extra.insert(extra.begin(), {"--docker-socket", docker.socket});
    providers.push_back(StartProvider(server.port, name, tokens[name], extra, "", data_dirs[name]));
    return *providers.back();
  }
  std::string Submit(const std::string& extra, const std::string& command) {
    Outcome o =
        Cli(db.conninfo(), "tasks submit --json " + repos.Pins() + " " + extra + " -- " + command);
    if (o.code != 0) throw std::runtime_error("submit failed: " + o.err);
    return core::JsonReader(o.out).Str("task").value_or("");
  }
  ~Platform() {
    for (auto& p : providers) {
      if (p->Running()) StopChild(*p, SIGTERM);
    }
    StopChild(*server.process, SIGTERM);
  }
};

}  // namespace

TEST_CASE("a task runs end to end through the CLI; the second run reuses mirror and image") {
  Platform p;
  p.Provider("local");
  REQUIRE(WaitForStatus(p.db.conninfo(), "local", "online"));

  std::string id = p.Submit("--name hello --cpu 0.5 --memory-mb 64", "sh run.sh");
  REQUIRE(WaitField(p.db.conninfo(), id, "state", "succeeded", 120));
  CHECK(Lifecycle(p.db.conninfo(), id) ==
        "task.submitted,task.assigned,task.accepted,task.preparing:git,task.preparing:build,"
        "task.running,task.succeeded");
  core::JsonReader first(EventData(p.db.conninfo(), id, "task.running"));
  CHECK(first.Raw("code_fetched") == "true");
  CHECK(first.Raw("image_built") == "true");

  Outcome logs = Cli(p.db.conninfo(), "tasks logs " + id.substr(0, 8));
  CHECK(logs.code == 0);
  CHECK(Contains(logs.out, "hello from pinned code"));
  CHECK(Contains(logs.out, "oops"));
  CHECK(Contains(logs.out, "[build]"));         // the env build's output is part of the task's log
  CHECK(Contains(logs.out, "[git] fetched "));  // and so is the fetch's progress
  Outcome json = Cli(p.db.conninfo(), "tasks logs " + id + " --json");
  CHECK(Contains(json.out, R"("stream":"stderr","text":"oops\n")"));
  // The preparation's output (fetch and build) is the `build` stream, not the task's stdout.
  CHECK(Text(p.db.conninfo(),
             "SELECT string_agg(DISTINCT data->>'stream', ',') FROM events WHERE type = "
             "'task.log' AND data->>'task' = '" +
                 id + "' AND (data->>'text' LIKE '[git]%' OR data->>'text' LIKE '[build]%')") ==
        "build");
  Outcome shown = Cli(p.db.conninfo(), "tasks show " + id + " --json");
  core::JsonReader task(shown.out);
  CHECK(task.Str("state") == "succeeded");
  CHECK(task.Int("exit_code") == 0);
  CHECK(task.Str("node") == "local");
  CHECK(task.Int("run_ms").value_or(-1) >= 0);
  // The placement was released with the ending: the node's capacity is free again.
  CHECK(Text(p.db.conninfo(), "SELECT count(*) FROM scheduler_placements") == "0");

  // Same pins again: no fetch, no build (from the events), and the image is the one tagged.
  std::string again = p.Submit("--name hello-again --cpu 0.5 --memory-mb 64", "sh run.sh");
  REQUIRE(WaitField(p.db.conninfo(), again, "state", "succeeded", 60));
  CHECK(Lifecycle(p.db.conninfo(), again) ==
        "task.submitted,task.assigned,task.accepted,task.preparing:git,task.running,"
        "task.succeeded");
  core::JsonReader second(EventData(p.db.conninfo(), again, "task.running"));
  CHECK(second.Raw("code_fetched") == "false");
  CHECK(second.Raw("env_fetched") == "false");
  CHECK(second.Raw("image_built") == "false");
  CHECK(second.Str("image") == first.Str("image"));
  CHECK(p.docker.Docker("image ls -q " + second.Str("image").value_or("none")).size() > 0);
  MESSAGE("prepare of the cached run: " << second.Int("prepare_ms").value_or(-1) << " ms");
  CHECK(Contains(Cli(p.db.conninfo(), "tasks logs " + again).out, "hello from pinned code"));

  {
    INFO("logs --follow tails a running task until it ends");
    std::string ticking =
        p.Submit("--name ticks", "sh -c 'for i in 1 2 3; do echo tick $i; sleep 1; done'");
    REQUIRE(WaitField(p.db.conninfo(), ticking, "state", "running", 30));
    Outcome follow =
        Run(CliBinary(), "--db " + Quote(p.db.conninfo()) + " tasks logs " + ticking + " --follow");
    CHECK(follow.code == 0);
    CHECK(Contains(follow.out, "tick 1\ntick 2\ntick 3\n"));
    CHECK(Contains(follow.err, "attempt 1 ended: succeeded"));
  }
  {
    INFO("cancel reaches the node: the container stops, the task ends cancelled");
    std::string sleeper = p.Submit("--name sleeper", "sh -c 'echo started; sleep 300'");
    REQUIRE(WaitField(p.db.conninfo(), sleeper, "state", "running", 30));
    REQUIRE(WaitUntil(
        [&] { return Contains(Cli(p.db.conninfo(), "tasks logs " + sleeper).out, "started"); },
        std::chrono::seconds(10)));
    Outcome c = Cli(p.db.conninfo(), "tasks cancel " + sleeper + " --reason 'wrong input'");
    CHECK(c.code == 0);
    REQUIRE(WaitField(p.db.conninfo(), sleeper, "state", "cancelled", 30));
    CHECK(Field(p.db.conninfo(), sleeper, "reason") == "wrong input");
    CHECK(p.docker.Docker("ps -aq --filter label=unidesk.task=" + sleeper).empty());
    CHECK(Contains(Lifecycle(p.db.conninfo(), sleeper),
                   "task.running,task.cancel_requested,task.cancelled"));
  }
  {
    INFO("a failing task says so; `tasks retry` runs another attempt");
    std::string failing = p.Submit("--name failing", "sh -c 'echo bad input >&2; exit 3'");
    REQUIRE(WaitField(p.db.conninfo(), failing, "state", "failed", 30));
    CHECK(Field(p.db.conninfo(), failing, "exit_code") == "3");
    CHECK(Field(p.db.conninfo(), failing, "failure_class") == "exit");
    CHECK(Field(p.db.conninfo(), failing, "blame") == "task");
    CHECK(Contains(Cli(p.db.conninfo(), "tasks show " + failing).out, "exited with code 3"));
    // The default policy retries lost attempts only: nothing more happened.
    CHECK(!Contains(Lifecycle(p.db.conninfo(), failing), "requeued"));
    Outcome retry = Cli(p.db.conninfo(), "tasks retry " + failing + " --json");
    CHECK(retry.code == 0);
    CHECK(Contains(retry.out, "\"next_attempt\":2"));
    REQUIRE(WaitField(p.db.conninfo(), failing, "attempt", "2", 30));
    REQUIRE(WaitField(p.db.conninfo(), failing, "state", "failed", 30));
    CHECK(
        Contains(Cli(p.db.conninfo(), "tasks logs " + failing + " --attempt 1").out, "bad input"));
    Outcome running = Cli(p.db.conninfo(), "tasks retry " + again);
    CHECK(running.code == 0);  // a succeeded task can run again too
    Outcome unknown = Cli(p.db.conninfo(), "tasks retry 00000000-0000-0000-0000-000000000000");
    CHECK(unknown.code == 1);
  }
}

TEST_CASE("a node killed mid-task: the attempt is lost and retried on another node") {
  Platform p;
  ChildProcess& first = p.Provider("n1");
  REQUIRE(WaitForStatus(p.db.conninfo(), "n1", "online"));
  // Warm the image so the attempts below start at once.
  std::string warm = p.Submit("--name warm", "true");
  REQUIRE(WaitField(p.db.conninfo(), warm, "state", "succeeded", 120));

  std::string id = p.Submit("--name long", "sh -c 'echo attempt $UNIDESK_ATTEMPT; sleep 6'");
  REQUIRE(WaitField(p.db.conninfo(), id, "state", "running", 30));
  REQUIRE(Field(p.db.conninfo(), id, "node") == "n1");
  p.Provider("n2");
  REQUIRE(WaitForStatus(p.db.conninfo(), "n2", "online"));
  first.Signal(SIGKILL);
  first.Wait();
  // Offline after the window, the attempt is lost, the policy (lost, 3 attempts) runs it again.
  REQUIRE(WaitField(p.db.conninfo(), id, "attempt", "2", 30));
  REQUIRE(WaitField(p.db.conninfo(), id, "state", "succeeded", 60));
  CHECK(Field(p.db.conninfo(), id, "node") == "n2");
  core::JsonReader lost(EventData(p.db.conninfo(), id, "task.lost"));
  CHECK(lost.Str("node") == "n1");
  CHECK(lost.Str("class") == "lost");
  CHECK(lost.Str("blame") == "infrastructure");
  CHECK(lost.Str("reason") == "the node went offline");
  CHECK(Contains(Lifecycle(p.db.conninfo(), id),
                 "task.running,task.lost,task.requeued,task.assigned,task.accepted"));
  CHECK(Contains(Cli(p.db.conninfo(), "tasks logs " + id).out, "attempt 2"));

  // The killed agent left its container and its attempt record; restarted too late, it follows
  // the container again and lists it in its hello, the server answers that attempt 1 is no
  // longer live, the container goes, and the agent's report of it is rejected (attempt 2 is the
  // live one) and recorded.
  p.Provider("n1");
  REQUIRE(WaitForStatus(p.db.conninfo(), "n1", "online"));
  CHECK(
      WaitUntil([&] { return p.docker.Docker("ps -aq --filter label=unidesk.task=" + id).empty(); },
                std::chrono::seconds(20)));
  CHECK(WaitUntil(
      [&] {
        return CountEvents(p.db.conninfo(),
                           "type = 'ingress.rejected' AND data->>'reason' = "
                           "'stale_report' AND data->>'detail' LIKE '%" +
                               id + " attempt 1%'") >= 1;
      },
      std::chrono::seconds(20)));
  CHECK(Field(p.db.conninfo(), id, "state") == "succeeded");
  CHECK(CountEvents(p.db.conninfo(), "stream_id = 'task-" + id + "' AND type = 'task.succeeded'") ==
        1);
}

namespace {

std::size_t Occurrences(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("an agent that restarts follows its running task on: killed, or told to keep it") {
  Platform p("30s");  // the node stays placed while its agent restarts
  std::vector<std::string> keep = {"--on-stop", "keep-running"};
  ChildProcess* agent = &p.Provider("n1", keep);
  REQUIRE(WaitForStatus(p.db.conninfo(), "n1", "online"));
  std::string warm = p.Submit("--name warm", "true");
  REQUIRE(WaitField(p.db.conninfo(), warm, "state", "succeeded", 120));

  for (int sig : {SIGKILL, SIGTERM}) {
    CAPTURE(sig);
    std::string id = p.Submit("--name survivor", "sh -c 'echo one; sleep 4; echo two'");
    REQUIRE(WaitField(p.db.conninfo(), id, "state", "running", 30));
    REQUIRE(WaitUntil([&] { return Contains(Cli(p.db.conninfo(), "tasks logs " + id).out, "one"); },
                      std::chrono::seconds(10)));
    std::int64_t offline_before = CountEvents(p.db.conninfo(), "type = 'node.offline'");
    if (sig == SIGKILL) {
      agent->Signal(SIGKILL);
      agent->Wait();
    } else {
      CHECK(StopChild(*agent, SIGTERM) == 0);
      // Its goodbye says it restarts (1012), so the node is not taken offline at once.
      CHECK(WaitUntil(
          [&] {
            return CountEvents(p.db.conninfo(),
                               "type = 'node.disconnected' AND (data->>'code')::int = 1012") >= 1;
          },
          std::chrono::seconds(10)));
    }
    CHECK_FALSE(p.docker.Docker("ps -q --filter label=unidesk.task=" + id).empty());  // runs on
    agent = &p.Provider("n1", keep);
    REQUIRE(WaitField(p.db.conninfo(), id, "state", "succeeded", 30));
    CHECK(Field(p.db.conninfo(), id, "attempt") == "1");
    CHECK(Lifecycle(p.db.conninfo(), id) ==
          "task.submitted,task.assigned,task.accepted,task.preparing:git,task.running,"
          "task.succeeded");
    CHECK(CountEvents(p.db.conninfo(), "type = 'node.offline'") == offline_before);
    Outcome logs = Cli(p.db.conninfo(), "tasks logs " + id);
    CHECK(Occurrences(logs.out, "one\n") == 1);  // nothing twice, nothing missing
    CHECK(Occurrences(logs.out, "two\n") == 1);
    CHECK(p.docker.Docker("ps -aq --filter label=unidesk.task=" + id).empty());
  }
}
