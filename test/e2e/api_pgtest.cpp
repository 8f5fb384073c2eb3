// The core API over real HTTP (curl against a real unidesk-server): submit with an
// Idempotency-Key, refusals naming the field, read, list, cancel; and Postgres down answered
// with 503 and Retry-After, never a hidden success.

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <set>
#include <thread>

#include "core/event_catalogue.h"
#include "core/event_store.h"
#include "core/json.h"
#include "core/log.h"
#include "test/e2e/node_support.h"
#include "test/e2e/socket_probe.h"

using namespace unidesk;
using namespace unidesk::test;
using namespace unidesk::test::e2e;

namespace {

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";

std::string Task(const std::string& extra = "") {
  return R"({"code_repo_url":"https://git.example.com/lab/code.git","code_commit_id":")" + kCommit +
         R"(","env_repo_url":"https://git.example.com/lab/env.git","env_commit_id":")" + kCommit +
         R"(","command":["python","train.py"])" + (extra.empty() ? "" : "," + extra) + "}";
}

struct Http {
  int status = 0;
  std::string body;
  std::string headers;
};

/// One request with curl; `body_file` instead of `body` for large bodies.
Http Call(int port, const std::string& method, const std::string& path,
          const std::string& body = "", const std::string& extra_headers = "") {
  std::string headers_file = TempPath("headers");
  std::string body_file = TempPath("body");
  std::string cmd = "curl -s -o " + Quote(body_file) + " -D " + Quote(headers_file) +
                    " -w '%{http_code}' -X " + method + " " + extra_headers +
                    " -H 'Content-Type: application/json' -H 'UniDesk-Actor: user:alice' ";
  if (!body.empty()) {
    std::string in = TempPath("in");
    std::ofstream(in) << body;
    cmd += "--data-binary @" + Quote(in) + " ";
  }
  cmd += Quote("http://127.0.0.1:" + std::to_string(port) + path);
  Http h;
  std::string code;
  Shell(cmd, &code);
  h.status = std::atoi(code.c_str());
  h.body = ReadFile(body_file);
  h.headers = ReadFile(headers_file);
  return h;
}

struct ApiServer {
  Server server;
  int api_port = 0;
};

ApiServer StartApi(const std::string& conninfo) {
  std::string ready = TempPath("api-ready");
  ApiServer a;
  a.server = StartNodeServer(conninfo, {"--api-ready-file", ready});
  WaitUntil([&] { return !ReadFile(ready).empty(); }, std::chrono::seconds(10));
  a.api_port = std::atoi(ReadFile(ready).c_str());
  return a;
}

std::string Field(const std::string& json, const char* key) {
  return core::JsonReader(json).Str(key).value_or("");
}

}  // namespace

TEST_CASE("POST /api/v1/tasks: created, repeated with the same key, refused naming the field") {
  TestDatabase db;
  ApiServer api = StartApi(db.conninfo());
  REQUIRE(api.api_port > 0);

  Http created = Call(api.api_port, "POST", "/api/v1/tasks", Task(R"("name":"first")"),
                      "-H 'Idempotency-Key: k-1'");
  REQUIRE_MESSAGE(created.status == 201, created.body);
  std::string id = Field(created.body, "task");
  CHECK(id.size() == 36);
  CHECK(Contains(created.headers, "application/json"));
  // The actor header is who submitted (audit).
  CHECK(Text(db.conninfo(), "SELECT metadata->>'actor' FROM events WHERE stream_id = 'task-" + id +
                                "'") == "user:alice");

  Http again = Call(api.api_port, "POST", "/api/v1/tasks", Task(R"("name":"first")"),
                    "-H 'Idempotency-Key: k-1'");
  CHECK(again.status == 200);
  CHECK(Field(again.body, "task") == id);
  CHECK(Contains(again.body, "\"repeated\":true"));
  Http other = Call(api.api_port, "POST", "/api/v1/tasks", Task(R"("name":"second")"),
                    "-H 'Idempotency-Key: k-1'");
  CHECK(other.status == 409);
  CHECK(Field(other.body, "error") == "idempotency_conflict");
  CHECK(CountEvents(db.conninfo(), "type = 'task.submitted'") == 1);

  struct Bad {
    std::string body;
    unsigned status;
    std::string field;
  };
  for (const Bad& b : std::vector<Bad>{
           {"{not json", 400, ""},
           {"[]", 400, ""},
           {Task(R"("colour":"red")"), 400, "colour"},
           {Task(R"("resources":{"gpus":-2})"), 400, "resources.gpus"},
           {Task(R"("dockerfile_path":"/etc/passwd")"), 400, "dockerfile_path"},
           {Task().replace(Task().find(kCommit), 40, "main"), 400, "code_commit_id"},
           {Task().replace(Task().find("https://git"), 8, "file:///"), 400, "code_repo_url"},
           {"{\"name\":\"" + std::string(300 * 1024, 'x') + "\"}", 413, ""},
       }) {
    CAPTURE(b.body.substr(0, 80));
    Http h = Call(api.api_port, "POST", "/api/v1/tasks", b.body);
    CHECK(h.status == b.status);
    CHECK(Field(h.body, "field") == b.field);
    CHECK_FALSE(Field(h.body, "message").empty());
  }
  Http long_key = Call(api.api_port, "POST", "/api/v1/tasks", Task(),
                       "-H 'Idempotency-Key: " + std::string(300, 'k') + "'");
  CHECK(long_key.status == 400);
  CHECK(Field(long_key.body, "field") == "Idempotency-Key");
  CHECK(CountEvents(db.conninfo(), "type = 'task.submitted'") == 1);  // nothing else written

  // Read it back (the projection catches up), list it, cancel it (no node: still queued).
  REQUIRE(WaitUntil([&] { return Call(api.api_port, "GET", "/api/v1/tasks/" + id).status == 200; },
                    std::chrono::seconds(10)));
  Http got = Call(api.api_port, "GET", "/api/v1/tasks/" + id);
  CHECK(Field(got.body, "name") == "first");
  CHECK(Field(got.body, "submitted_by") == "user:alice");
  Http list = Call(api.api_port, "GET", "/api/v1/tasks?state=queued&limit=10");
  CHECK(list.status == 200);
  CHECK(Contains(list.body, id));
  CHECK(Call(api.api_port, "GET", "/api/v1/tasks?limit=0").status == 400);
  CHECK(Call(api.api_port, "GET", "/api/v1/tasks/00000000-0000-0000-0000-000000000000").status ==
        404);
  CHECK(Call(api.api_port, "GET", "/api/v1/tasks/..%2F..%2Fetc").status == 404);
  CHECK(Call(api.api_port, "GET", "/api/v1/nothing").status == 404);
  CHECK(Call(api.api_port, "DELETE", "/api/v1/tasks").status == 405);

  Http cancel =
      Call(api.api_port, "POST", "/api/v1/tasks/" + id + "/cancel", R"({"reason":"wrong data"})");
  CHECK(cancel.status == 202);
  REQUIRE(WaitUntil(
      [&] {
        return Field(Call(api.api_port, "GET", "/api/v1/tasks/" + id).body, "state") == "cancelled";
      },
      std::chrono::seconds(10)));
  Http late = Call(api.api_port, "POST", "/api/v1/tasks/" + id + "/cancel");
  CHECK(late.status == 409);
  CHECK(Field(late.body, "error") == "conflict");
  const std::string stream = "stream_id = 'task-" + id + "'";
  CHECK(Text(db.conninfo(), "SELECT metadata->>'source' FROM events WHERE " + stream +
                                " AND type = 'task.cancel_requested'") == "server/api");

  // Another attempt of the ended task; refused while it has not ended.
  Http retry = Call(api.api_port, "POST", "/api/v1/tasks/" + id + "/retry");
  CHECK(retry.status == 202);
  CHECK(Field(retry.body, "ended_as") == "cancelled");
  CHECK(Contains(retry.body, "\"next_attempt\":1"));
  CHECK(Text(db.conninfo(),
             "SELECT metadata->>'source' || ' ' || (data->>'by') FROM events "
             "WHERE " +
                 stream + " AND type = 'task.requeued'") == "server/api user:alice");
  Http early = Call(api.api_port, "POST", "/api/v1/tasks/" + id + "/retry");
  CHECK(early.status == 409);
  CHECK(Contains(Field(early.body, "message"), "has not ended"));
  CHECK(Call(api.api_port, "GET", "/api/v1/tasks/" + id + "/retry").status == 405);
  CHECK(Call(api.api_port, "POST", "/api/v1/tasks/00000000-0000-4000-8000-000000000000/retry")
            .status == 404);

  // Cancel and retry run on the API worker's connection: twenty of them start no backend each
  // (Postgres counts the sessions started; each probe here is one of them).
  auto sessions = [&] {
    return std::stoll(Text(db.conninfo(),
                           "SELECT sessions FROM pg_stat_database WHERE datname = "
                           "current_database()"));
  };
  auto settled = [&] {
    long long last = sessions();
    for (int i = 0; i < 40; ++i) {  // until only the probe itself counts (backends flush at exit)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      long long now = sessions();
      if (now == last + 1) return now;
      last = now;
    }
    return last;
  };
  long long before = settled();
  for (int i = 0; i < 20; ++i) {
    // The first cancels the retried task; the scheduler ends it, and later ones are refused.
    unsigned status = Call(api.api_port, "POST", "/api/v1/tasks/" + id + "/cancel").status;
    CHECK((status == 202 || status == 409));
  }
  long long after = settled();
  CAPTURE(before);
  CAPTURE(after);
  CHECK(after - before <= 12);  // the probes, and workers that had not connected yet (8)
  CHECK(Call(api.api_port, "GET", "/readyz").status == 200);
  StopChild(*api.server.process, SIGTERM);
}

TEST_CASE("GET /api/v1/tasks/{id}/logs: pages of an attempt's output, complete once it ended") {
  TestDatabase db;
  ApiServer api = StartApi(db.conninfo());
  REQUIRE(api.api_port > 0);
  Http created = Call(api.api_port, "POST", "/api/v1/tasks", Task(R"("name":"chatty")"));
  REQUIRE(created.status == 201);
  std::string id = Field(created.body, "task");
  const std::string logs = "/api/v1/tasks/" + id + "/logs";
  REQUIRE(WaitUntil([&] { return Call(api.api_port, "GET", logs).status == 200; },
                    std::chrono::seconds(10)));
  Http none = Call(api.api_port, "GET", logs);  // never placed: no output yet
  CHECK(Contains(none.body, "\"attempt\":0"));
  CHECK(Contains(none.body, "\"chunks\":[]"));
  CHECK(Contains(none.body, "\"complete\":false"));

  // What a node's reports leave on the bus: the attempt, its output, its ending (no node runs
  // here, so the test appends them as the ingress would).
  core::EventCatalogue catalogue = core::BuiltinCatalogue();
  core::EventStore store({db.conninfo()}, catalogue, core::NullLogger());
  auto append = [&](const std::string& stream, const std::string& type, const std::string& data) {
    core::NewEvent e;
    e.type = type;
    e.data_json = data;
    e.metadata = {"node:n1", id, "", "test"};
    auto r = store.Append({stream, core::ExpectedVersion::Any(), {e}, {}});
    REQUIRE_MESSAGE(r.ok(), r.error().message);
  };
  // The fields every event of attempt 1 on node n1 starts with.
  const std::string task = R"({"task":")" + id + R"(","attempt":1,"node":"n1")";
  append(
      "task-" + id, "task.assigned",
      task + R"(,"resources":{"cpu":1,"memory_mb":512,"gpus":0},"gpu_indices":[],"queued_ms":1})");
  for (int seq = 1; seq <= 3; ++seq) {
    append("tasklog-" + id, "task.log",
           R"({"task":")" + id + R"(","attempt":1,"seq":)" + std::to_string(seq) +
               R"(,"stream":"stdout","text":"line )" + std::to_string(seq) + R"(\n"})");
  }
  REQUIRE(WaitUntil([&] { return Contains(Call(api.api_port, "GET", logs).body, "\"attempt\":1"); },
                    std::chrono::seconds(10)));
  Http first = Call(api.api_port, "GET", logs + "?limit=2");
  CHECK(first.status == 200);
  CHECK(Contains(first.body, R"("chunks":[{"seq":1,"stream":"stdout","text":"line 1\n"},)"
                             R"({"seq":2,"stream":"stdout","text":"line 2\n"}])"));
  CHECK(Contains(first.body, "\"complete\":false"));
  std::string next = core::JsonReader(first.body).Raw("next").value_or("");
  Http rest = Call(api.api_port, "GET", logs + "?attempt=1&after=" + next);
  CHECK(Contains(rest.body, R"("chunks":[{"seq":3,"stream":"stdout","text":"line 3\n"}])"));
  CHECK(Contains(rest.body, "\"complete\":false"));  // still running
  next = core::JsonReader(rest.body).Raw("next").value_or("");

  append("task-" + id, "task.succeeded", task + R"(,"exit_code":0,"run_ms":5})");
  REQUIRE(WaitUntil(
      [&] {
        return Field(Call(api.api_port, "GET", "/api/v1/tasks/" + id).body, "state") == "succeeded";
      },
      std::chrono::seconds(10)));
  Http done = Call(api.api_port, "GET", logs + "?after=" + next);
  CHECK(Contains(done.body, "\"chunks\":[]"));
  CHECK(Contains(done.body, "\"complete\":true"));
  CHECK(Contains(done.body, "\"state\":\"succeeded\""));

  // Bad input names its field.
  for (auto [query, field] : {std::pair{"?attempt=0", "attempt"},
                              {"?after=x", "after"},
                              {"?limit=100000", "limit"},
                              {"?limit=2x", "limit"}}) {
    Http bad = Call(api.api_port, "GET", logs + query);
    CHECK(bad.status == 400);
    CHECK(Field(bad.body, "field") == field);
  }
  CHECK(Call(api.api_port, "POST", logs).status == 405);
  CHECK(
      Call(api.api_port, "GET", "/api/v1/tasks/00000000-0000-4000-8000-000000000000/logs").status ==
      404);
  store.Stop();
  StopChild(*api.server.process, SIGTERM);
}

TEST_CASE("submissions waiting for their commit hold no worker, and SIGTERM answers every one") {
  TestDatabase db;
  ApiServer api = StartApi(db.conninfo());
  REQUIRE(api.api_port > 0);
  // Every append group now waits for this lock: the submissions stay in flight.
  pqxx::connection holder(db.conninfo());
  pqxx::work lock(holder);
  lock.exec("LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE");
  constexpr int kSubmissions = 24;  // three times the API's worker threads
  std::vector<std::thread> clients;
  std::vector<Http> answers(kSubmissions);
  std::atomic<int> answered{0};
  for (int i = 0; i < kSubmissions; ++i) {
    clients.emplace_back([&, i] {
      answers[i] = Call(api.api_port, "POST", "/api/v1/tasks", Task(),
                        "-H 'Idempotency-Key: flight-" + std::to_string(i) + "'");
      ++answered;
    });
  }
  pqxx::connection probe(db.conninfo());
  auto waiting = [&] {
    pqxx::nontransaction tx(probe);
    return tx
        .exec(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
            "datname = current_database()")[0][0]
        .as<int>();
  };
  REQUIRE(WaitUntil([&] { return waiting() >= 1; }, std::chrono::seconds(10)));
  // With a worker blocked per submission, these would queue behind all of them.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Http list = Call(api.api_port, "GET", "/api/v1/tasks", "", "--max-time 5");
  CHECK(list.status == 200);
  CHECK(Call(api.api_port, "GET", "/healthz", "", "--max-time 5").status == 200);
  CHECK(answered == 0);
  // Stopping waits for them: released after the signal, every one is answered.
  api.server.process->Signal(SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(api.server.process->Running());
  lock.commit();
  for (auto& t : clients) t.join();
  std::set<std::string> ids;
  for (const Http& a : answers) {
    CHECK(a.status == 201);
    ids.insert(Field(a.body, "task"));
  }
  CHECK(ids.size() == kSubmissions);
  CHECK(CountEvents(db.conninfo(), "type = 'task.submitted'") == kSubmissions);
  CHECK(WaitUntil([&] { return !api.server.process->Running(); }, std::chrono::seconds(10)));
  CHECK(api.server.process->Wait() == 0);
}

TEST_CASE("Postgres down: the API answers 503 with Retry-After, /readyz says so, then recovers") {
  PrivateCluster cluster;  // declared first: the database is dropped before it stops
  TestDatabase db(TestDatabase::Schema::kMigrated, cluster.conninfo());
  ApiServer api = StartApi(db.conninfo());
  REQUIRE(api.api_port > 0);
  REQUIRE(Call(api.api_port, "POST", "/api/v1/tasks", Task()).status == 201);
  cluster.Stop();
  Http submit = Call(api.api_port, "POST", "/api/v1/tasks", Task(), "-H 'Idempotency-Key: down-1'");
  CHECK(submit.status == 503);
  CHECK(Field(submit.body, "error") == "unavailable");
  CHECK(Contains(submit.headers, "Retry-After: 5"));
  Http ready = Call(api.api_port, "GET", "/readyz");
  CHECK(ready.status == 503);
  CHECK(Call(api.api_port, "GET", "/healthz").status == 200);  // the process itself is fine
  cluster.Start();
  // The same request again, once Postgres is back: accepted, and written once.
  REQUIRE(WaitUntil(
      [&] {
        return Call(api.api_port, "POST", "/api/v1/tasks", Task(), "-H 'Idempotency-Key: down-1'")
                   .status == 201;
      },
      std::chrono::seconds(30), std::chrono::milliseconds(500)));
  CHECK(CountEvents(db.conninfo(), "type = 'task.submitted'") == 2);
  CHECK(Call(api.api_port, "GET", "/readyz").status == 200);
  StopChild(*api.server.process, SIGTERM);
}

TEST_CASE("the server's threads carry names an operator can read in top -H") {
  TestDatabase db;
  ApiServer api = StartApi(db.conninfo());
  REQUIRE(api.api_port > 0);
  std::string task_dir = "/proc/" + std::to_string(api.server.process->pid()) + "/task";
  std::multiset<std::string> names;
  for (const auto& t : std::filesystem::directory_iterator(task_dir)) {
    std::string comm = ReadFile(t.path().string() + "/comm");
    if (!comm.empty() && comm.back() == '\n') comm.pop_back();
    names.insert(comm);
  }
  for (const char* n : {"ud-api", "ud-ingress", "ud-scheduler", "ud-tasks", "ud-nodes", "ud-audit",
                        "ud-notify", "ud-tail", "ud-liveness", "ud-heartbeats"}) {
    CHECK_MESSAGE(names.count(n) == 1, n);
  }
  CHECK(names.count("ud-api-work") == 8);    // ApiSettings::workers
  CHECK(names.count("ud-ingress-db") == 4);  // IngressSettings::db_threads
  CHECK(names.count("ud-append") >= 1);
  CHECK(names.count("ud-reports") >= 1);
  StopChild(*api.server.process, SIGTERM);
}

TEST_CASE("the API answers without Nagle's delay (TCP_NODELAY on every accepted connection)") {
  TestDatabase db;
  ApiServer api = StartApi(db.conninfo());
  REQUIRE(api.api_port > 0);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<std::uint16_t>(api.api_port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
  int pid = api.server.process->pid();
  std::optional<bool> no_delay;
  CHECK(WaitUntil(
      [&] { return (no_delay = TcpNoDelayOf(pid, api.api_port, LocalPort(fd))).has_value(); },
      std::chrono::seconds(5)));
  CHECK(no_delay == std::optional<bool>(true));
  close(fd);
  StopChild(*api.server.process, SIGTERM);
}
