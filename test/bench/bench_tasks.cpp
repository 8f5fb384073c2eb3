// Benchmark: tasks through the platform's control path. One unidesk-server with every role;
// N simulated nodes (default 200) speaking the real protocol over real sockets, each
// acknowledging and finishing every assignment at once (the bench load tool: a fake node, since
// 200 machines cannot run here); T tasks (default 2,000) submitted through the core API as fast
// as it takes them, from 32 keep-alive connections (CLIENTS):
// the API answers a submission when its group commits, so more connections mean larger groups.
//
// Figures: submit_per_s; assign latency = from just before the POST to the `assign` frame read
// by the node (p50, p99); scheduled_per_s = tasks / (first submit -> last assignment received).
// Ceiling beside them, measured in the same run: raw Postgres, one-row INSERT + COMMIT from 8
// connections (what one submission costs at least). Then prepare_cached_ms: the provider's
// runtime (TaskRunner) on a real Docker engine (ops/dockerd), the second run of the same pins
// (mirror and image cached). Usage: ops/bench tasks [NODES] [TASKS] [CLIENTS] [RATE]
// RATE (tasks/s, default 0: as fast as the API takes them) paces the submissions instead, to
// see the latency at a load the machine carries rather than at saturation.

#include <array>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "core/ids.h"
#include "core/json.h"
#include "core/pg.h"
#include "core/protocol.h"
#include "provider/task_runner.h"
#include "test/bench/bench_util.h"
#include "test/e2e/task_repos.h"

using namespace unidesk;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
namespace proto = core::protocol;
using tcp = net::ip::tcp;
using bench::Clock;
using bench::Percentile;

namespace {

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";

/// When each task's assignment reached its node.
struct Received {
  std::mutex mu;
  std::map<std::string, Clock::time_point> at;
  std::atomic<long long> count{0};
};

/// One simulated node on a thread of its own: hello, then every `assign` is acknowledged and
/// finished at once (reports `accepted` and `succeeded` from its outbox).
void SimNode(unsigned short port, std::string name, std::string token, Received& received,
             std::atomic<int>& joined) {
  try {
    net::io_context ioc;
    websocket::stream<tcp::socket> ws(ioc);
    tcp::resolver resolver(ioc);
    net::connect(ws.next_layer(), resolver.resolve("127.0.0.1", std::to_string(port)));
    ws.next_layer().set_option(tcp::no_delay(true));  // as the agent does
    ws.set_option(websocket::stream_base::decorator([token](websocket::request_type& r) {
      r.set(http::field::authorization, "Bearer " + token);
    }));
    ws.handshake("127.0.0.1", proto::kPath);
    ws.text(true);
    proto::Hello h;
    h.id = core::NewUuid();
    h.node = name;
    h.agent_version = "bench";
    h.protocol_version = proto::kVersion;
    h.resources.cpu_cores = 64;
    h.resources.memory_bytes = 256LL << 30;
    h.runtimes = {"docker"};
    h.health.docker_ok = true;
    ws.write(net::buffer(proto::Write(h)));
    std::string outbox = core::NewUuid();
    std::int64_t seq = 0;
    beast::flat_buffer buf;
    for (;;) {
      beast::error_code ec;
      ws.read(buf, ec);
      if (ec) return;  // the server closed the session (it is stopping)
      auto msg = proto::ParseServerMessage(beast::buffers_to_string(buf.data()));
      buf.consume(buf.size());
      if (!msg.ok()) continue;
      if (std::get_if<proto::Welcome>(&msg.value())) ++joined;
      if (auto* a = std::get_if<proto::Assign>(&msg.value())) {
        auto now = Clock::now();
        {
          std::lock_guard<std::mutex> lock(received.mu);
          received.at.emplace(a->task, now);
        }
        ++received.count;
        for (const char* state : {"accepted", "succeeded"}) {
          proto::TaskReport r;
          r.task = a->task;
          r.attempt = a->attempt;
          r.state = state;
          r.exit_code = 0;
          ws.write(net::buffer(
              proto::Write(proto::Report{"", outbox, ++seq, "task", proto::ToJson(r)})));
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "node %s: %s\n", name.c_str(), e.what());
  }
}

/// Submits tasks [next, total) through POST /api/v1/tasks on one keep-alive connection.
/// With `rate` > 0, task i is not sent before start + i / rate seconds.
void Submitter(unsigned short port, int total, std::atomic<int>& next,
               std::map<std::string, Clock::time_point>& sent, std::mutex& mu,
               std::atomic<int>& failed, Clock::time_point start, double rate) {
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  tcp::resolver resolver(ioc);
  stream.connect(resolver.resolve("127.0.0.1", std::to_string(port)));
  stream.socket().set_option(tcp::no_delay(true));  // as HTTP clients do
  for (int i = next++; i < total; i = next++) {
    if (rate > 0) {
      std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(i / rate)));
    }
    std::string body = R"({"name":"bench-)" + std::to_string(i) +
                       R"(","code_repo_url":"https://g.example/a.git","code_commit_id":")" +
                       kCommit + R"(","env_repo_url":"https://g.example/e.git","env_commit_id":")" +
                       kCommit + R"(","command":["true"],"resources":{"cpu":0.25,"memory_mb":64}})";
    http::request<http::string_body> req{http::verb::post, "/api/v1/tasks", 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.set("Idempotency-Key", "bench-" + std::to_string(i) + "-" + core::NewUuid());
    req.body() = body;
    req.prepare_payload();
    auto t0 = Clock::now();
    http::write(stream, req);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res);
    auto id = core::JsonReader(res.body()).Str("task");
    if (res.result_int() != 201 || !id) {
      if (failed++ == 0) {
        std::fprintf(stderr, "first refusal: %u %s", res.result_int(), res.body().c_str());
      }
      continue;
    }
    std::lock_guard<std::mutex> lock(mu);
    sent.emplace(*id, t0);
  }
}

/// The ceiling: one-row INSERT + COMMIT, as fast as 8 connections go, for `n` rows.
double RawCommitsPerSecond(const std::string& db, int n) {
  bench::Exec(db, "CREATE TABLE IF NOT EXISTS bench_ceiling (id bigserial, body jsonb)");
  std::atomic<int> next{0};
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      pqxx::connection c(db);
      for (int i = next++; i < n; i = next++) {
        pqxx::work tx(c);
        tx.exec_params("INSERT INTO bench_ceiling (body) VALUES ($1::jsonb)",
                       R"({"task":)" + std::to_string(i) + "}");
        tx.commit();
      }
    });
  }
  for (auto& t : threads) t.join();
  return n / bench::Seconds(t0, Clock::now());
}

/// prepare_ms of the second run of the same pins on a real Docker engine; -1 when it failed.
double PrepareCachedMs(const std::string& dir) {
  test::e2e::Dockerd docker;
  test::e2e::TaskRepos repos;
  provider::RunnerSettings s;
  s.node = "bench";
  s.data_dir = dir + "/provider";
  s.docker_socket = docker.socket;
  s.git = test::GitFetch();
  provider::Assignment a = repos.Assignment("");
  double ms = -1;
  for (int run = 1; run <= 2; ++run) {
    a.task_id = core::NewUuid();
    auto o = provider::TaskRunner(s).Run(a, {});
    if (o.state != "succeeded") {
      std::fprintf(stderr, "prepare run %d: %s (%s)\n", run, o.state.c_str(), o.reason.c_str());
      return -1;
    }
    std::printf("  run %d: prepare %lld ms (code fetched %d, image built %d)\n", run,
                static_cast<long long>(o.prepare_ms), o.code_fetched, o.image_built);
    ms = static_cast<double>(o.prepare_ms);
  }
  return ms;
}

/// Seconds since the epoch of a steady-clock time point (the server's timestamps are wall time).
double WallSeconds(Clock::time_point t, Clock::time_point steady0,
                   std::chrono::system_clock::time_point wall0) {
  return std::chrono::duration<double>(wall0.time_since_epoch()).count() +
         std::chrono::duration<double>(t - steady0).count();
}

/// Where the assign latency goes, per task, from the bus: POST -> task.submitted recorded (its
/// transaction's start) -> the scheduling pass that assigned it started -> the node read
/// `assign`. Beside it, the projector's lag (a bench-only trigger on `tasks`), which the
/// scheduler does not wait for.
void PrintHops(const std::string& db, const std::map<std::string, Clock::time_point>& sent,
               const std::map<std::string, Clock::time_point>& received, Clock::time_point steady0,
               std::chrono::system_clock::time_point wall0) {
  std::map<std::string, std::array<double, 3>> at;  // submitted, projected, assigned
  pqxx::connection c(db);
  pqxx::nontransaction tx(c);
  for (const auto& r :
       tx.exec("SELECT s.data->>'task', extract(epoch FROM s.recorded_at), "
               "  extract(epoch FROM p.at), extract(epoch FROM a.recorded_at) "
               "FROM events s JOIN bench_projected p ON p.id = s.data->>'task' "
               "JOIN events a ON a.stream_id = s.stream_id AND a.type = 'task.assigned' "
               "WHERE s.type = 'task.submitted'")) {
    at[r[0].c_str()] = {r[1].as<double>(), r[2].as<double>(), r[3].as<double>()};
  }
  std::vector<double> append, project, queue, deliver;
  for (const auto& [id, t] : at) {
    auto s = sent.find(id);
    auto g = received.find(id);
    if (s == sent.end() || g == received.end()) continue;
    append.push_back((t[0] - WallSeconds(s->second, steady0, wall0)) * 1000);
    project.push_back((t[1] - t[0]) * 1000);
    queue.push_back((t[2] - t[0]) * 1000);
    deliver.push_back((WallSeconds(g->second, steady0, wall0) - t[2]) * 1000);
  }
  auto line = [](const char* name, std::vector<double>& v) {
    std::printf("  %-44s p50 %8.1f ms  p99 %8.1f ms\n", name, Percentile(v, 50), Percentile(v, 99));
  };
  std::printf("where the assign latency goes (%zu tasks):\n", append.size());
  line("POST -> task.submitted (transaction start)", append);
  line("task.submitted -> the assigning pass started", queue);
  line("pass started -> node read assign", deliver);
  line("(task.submitted -> tasks row projected)", project);
}

}  // namespace

int main(int argc, char** argv) {
  int nodes = argc > 1 ? std::atoi(argv[1]) : 200;
  int tasks = argc > 2 ? std::atoi(argv[2]) : 2000;
  int clients = argc > 3 ? std::atoi(argv[3]) : 32;
  double rate = argc > 4 ? std::atof(argv[4]) : 0;
  std::string dir = "/tmp/unidesk-bench-tasks-" + std::to_string(getpid());
  test::Shell("mkdir -p " + bench::ShellQuote(dir));
  std::string db = bench::FreshDatabase("bench_tasks");
  // Bench-only instrument: when the projector wrote each task's row.
  bench::Exec(db,
              "CREATE TABLE bench_projected (id text PRIMARY KEY, at timestamptz);"
              "CREATE FUNCTION bench_projected() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
              "INSERT INTO bench_projected VALUES (NEW.id, clock_timestamp()) ON CONFLICT DO "
              "NOTHING; RETURN NEW; END $$;"
              "CREATE TRIGGER bench_projected AFTER INSERT ON tasks FOR EACH ROW EXECUTE "
              "FUNCTION bench_projected()");

  // The ceiling first, on the same cluster.
  double ceiling = RawCommitsPerSecond(db, tasks);
  std::printf("ceiling: raw Postgres, one-row INSERT+COMMIT from 8 connections: %.0f/s\n", ceiling);

  // Credentials straight into node_credentials (load test; no node.registered events).
  std::mt19937_64 rng(std::random_device{}());
  std::vector<std::pair<std::string, std::string>> creds;
  {
    std::vector<std::string> names, hashes;
    for (int i = 0; i < nodes; ++i) {
      std::string token = bench::NewToken(rng);
      char name[32];
      std::snprintf(name, sizeof name, "sim-%04d", i);
      creds.emplace_back(name, token);
      names.push_back(name);
      hashes.push_back(core::Sha256Hex(token));
    }
    pqxx::connection c(db);
    pqxx::work tx(c);
    tx.exec_params(
        "INSERT INTO node_credentials (node, token_sha256) "
        "SELECT * FROM unnest($1::text[], $2::text[])",
        core::PgArrayLiteral(names), core::PgArrayLiteral(hashes));
    tx.commit();
  }

  std::string ready = dir + "/ingress.port", api_ready = dir + "/api.port",
              log = dir + "/server.log";
  test::ChildProcess server(
      {test::BuildDir() + "/ingress/unidesk-server", "--db", db, "--public", "127.0.0.1:0",
       "--ready-file", ready, "--api", "127.0.0.1:0", "--api-ready-file", api_ready,
       "--heartbeat-interval", "60s", "--suspect-after", "120s", "--offline-after", "300s"},
      {}, log);
  unsigned short port = bench::WaitReady(server, ready, log);
  unsigned short api = bench::WaitReady(server, api_ready, log);

  Received received;
  std::atomic<int> joined{0};
  std::vector<std::thread> fleet;
  for (const auto& [name, token] : creds) {
    fleet.emplace_back(SimNode, port, name, token, std::ref(received), std::ref(joined));
  }
  for (int i = 0; i < 600 && joined < nodes; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Every node online in the read model the scheduler uses.
  for (int i = 0; i < 600; ++i) {
    if (bench::Scalar(db,
                      "SELECT count(*) FROM nodes WHERE status = 'online' AND "
                      "health->>'docker_ok' = 'true'") >= nodes) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::printf("%d simulated nodes joined\n", joined.load());

  std::map<std::string, Clock::time_point> sent;
  std::mutex sent_mu;
  std::atomic<int> next{0}, failed{0};
  auto t0 = Clock::now();
  auto wall0 = std::chrono::system_clock::now();
  std::vector<std::thread> submitters;
  for (int i = 0; i < clients; ++i) {
    submitters.emplace_back(Submitter, api, tasks, std::ref(next), std::ref(sent),
                            std::ref(sent_mu), std::ref(failed), t0, rate);
  }
  for (auto& t : submitters) t.join();
  double submit_s = bench::Seconds(t0, Clock::now());
  for (int i = 0; i < 1200 && received.count < tasks - failed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::vector<double> latency;
  Clock::time_point last = t0;
  {
    std::lock_guard<std::mutex> lock(received.mu);
    for (const auto& [id, at] : received.at) {
      auto s = sent.find(id);
      if (s == sent.end()) continue;
      latency.push_back(bench::Millis(s->second, at));
      last = std::max(last, at);
    }
  }
  double scheduled_s = bench::Seconds(t0, last);
  long long succeeded = 0;
  for (int i = 0; i < 200; ++i) {  // the nodes' reports land; the bus holds every ending
    succeeded = bench::Scalar(db, "SELECT count(*) FROM events WHERE type = 'task.succeeded'");
    if (succeeded >= static_cast<long long>(latency.size())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  server.Signal(SIGTERM);  // closes every session: the node threads end
  for (auto& t : fleet) t.join();
  server.Wait();

  double submit_per_s = sent.size() / submit_s;
  double scheduled_per_s = latency.size() / scheduled_s;
  double p50 = bench::Percentile(latency, 50), p99 = bench::Percentile(latency, 99);
  std::printf("submitted %zu (%d refused) in %.2f s: %.0f/s (ceiling %.0f commits/s)\n",
              sent.size(), failed.load(), submit_s, submit_per_s, ceiling);
  std::printf(
      "assigned and received %zu; scheduled end to end %.0f/s; assign latency p50 %.1f "
      "ms, p99 %.1f ms; %lld succeeded on the bus\n",
      latency.size(), scheduled_per_s, p50, p99, succeeded);

  PrintHops(db, sent, received.at, t0, wall0);

  std::printf("prepare, cached (real provider runtime, real dockerd):\n");
  double prepare = PrepareCachedMs(dir);
  if (std::getenv("UNIDESK_BENCH_KEEP") == nullptr) {
    // Also the repositories the prepare runs made (e2e TempPath names carry this pid).
    test::Shell("rm -rf " + bench::ShellQuote(dir) + " /tmp/unidesk-e2e-" +
                std::to_string(getpid()) + "-*");
  }

  std::cout << bench::JsonLine("tasks")
                   .Num("submitted", static_cast<double>(sent.size()))
                   .Num("submit_per_s", submit_per_s)
                   .Num("assign_p50_ms", p50, 1)
                   .Num("assign_p99_ms", p99, 1)
                   .Num("scheduled_per_s", scheduled_per_s)
                   .Num("prepare_cached_ms", prepare)
                   .Num("nodes", nodes)
                   .Num("offered_per_s", rate)  // 0: as fast as the API takes them
                   .Num("ceiling_commits_per_s", ceiling)
                   .Done()
            << std::endl;
  return latency.size() == sent.size() && prepare >= 0 ? 0 : 1;
}
