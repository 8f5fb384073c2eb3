// Benchmark: events/s of EventStore::Append (single events from 1, 4 and 16 writers; batches of
// 100), each beside pgbench's single-row or 100-row INSERTs into an identical `events` table.

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/event_store.h"
#include "core/pg.h"
#include "test/bench/bench_util.h"

using namespace unidesk;
using bench::Clock;

namespace {

constexpr const char* kMetadataJson =
    R"({"actor":"bench-user","correlation_id":"bench-corr","causation_id":"","source":"bench"})";

struct Settings {
  double seconds = 10;                // per measured phase, for the store and for pgbench each
  int rounds = 5;                     // a phase alternates store and pgbench slices this often
  std::vector<int> levels{1, 4, 16};  // writer threads of the single-event phases
  bool batch = true;                  // run the batch100 phase
  int batch_writers = 4;
  int writer_connections = 0;  // 0: the store's default
  bool notify = true;
};

/// What the store did in one slice (or, summed, in a phase).
struct Slice {
  long long appends = 0;
  long long events = 0;
  long long transactions = 0;  // distinct tx_id among the events written
  double seconds = 0;
  double cpu_seconds = 0;  // of this process: writers, store, notifier
  std::vector<double> latencies_ms;

  void Add(const Slice& o) {
    appends += o.appends;
    events += o.events;
    transactions += o.transactions;
    seconds += o.seconds;
    cpu_seconds += o.cpu_seconds;
    latencies_ms.insert(latencies_ms.end(), o.latencies_ms.begin(), o.latencies_ms.end());
  }
  double rate() const { return seconds > 0 ? static_cast<double>(events) / seconds : 0; }
};

core::NewEvent BenchEvent(long long n) {
  core::NewEvent e;
  e.type = "bench.happened";
  e.data_json = "{\"n\": " + std::to_string(n) + "}";
  e.metadata = {"bench-user", "bench-corr", "", "bench"};
  return e;
}

/// `writers` threads, each appending `per_append` events per Append to its own stream until the
/// deadline; every Append waits for its own commit.
Slice RunStore(core::EventStore& store, const std::string& conninfo, int writers, int per_append,
               double seconds, const std::string& stream_prefix) {
  long long head_before = bench::Scalar(conninfo, "SELECT coalesce(max(position), 0) FROM events");
  std::atomic<bool> go{false};
  std::atomic<bool> failed{false};
  std::vector<long long> appends(writers, 0);
  std::vector<std::vector<double>> latencies(writers);
  std::vector<Clock::time_point> finished(writers);
  Clock::time_point start;
  Clock::time_point deadline;
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      std::string stream = stream_prefix + std::to_string(w);
      latencies[w].reserve(20000);
      while (!go.load()) std::this_thread::yield();
      long long n = 0;
      while (Clock::now() < deadline && !failed.load()) {
        core::AppendRequest req{stream, core::ExpectedVersion::Any(), {}, {}};
        for (int i = 0; i < per_append; ++i) req.events.push_back(BenchEvent(n++));
        auto t0 = Clock::now();
        auto r = store.Append(std::move(req));
        auto t1 = Clock::now();
        if (!r.ok()) {
          std::fprintf(stderr, "append failed: %s: %s\n", core::AppendErrorName(r.error().code),
                       r.error().message.c_str());
          failed = true;
          break;
        }
        ++appends[w];
        latencies[w].push_back(bench::Millis(t0, t1));
      }
      finished[w] = Clock::now();
    });
  }
  double cpu_before = bench::ProcessCpuSeconds();
  start = Clock::now();
  deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  go = true;
  for (auto& t : threads) t.join();
  if (failed) throw std::runtime_error("an append failed; see above");

  Slice s;
  s.seconds = bench::Seconds(start, *std::max_element(finished.begin(), finished.end()));
  s.cpu_seconds = bench::ProcessCpuSeconds() - cpu_before;
  for (int w = 0; w < writers; ++w) {
    s.appends += appends[w];
    s.latencies_ms.insert(s.latencies_ms.end(), latencies[w].begin(), latencies[w].end());
  }
  s.events = s.appends * per_append;
  s.transactions =
      bench::Scalar(conninfo, "SELECT count(DISTINCT tx_id) FROM events WHERE position > " +
                                  std::to_string(head_before));
  return s;
}

/// What one pgbench run did.
struct PgbenchRun {
  double tps = 0;  // without initial connection time
  double client_cpu_seconds = 0;
};

/// pgbench -n -f script -c clients -j min(clients, 2) -T seconds.
PgbenchRun RunPgbench(const std::string& conninfo, const std::string& script_path, int clients,
                      double seconds) {
  std::string cmd = "pgbench -n -f " + bench::ShellQuote(script_path) + " -c " +
                    std::to_string(clients) + " -j " + std::to_string(std::min(clients, 2)) +
                    " -T " + std::to_string(static_cast<int>(seconds)) + " " +
                    bench::ShellQuote(conninfo);
  PgbenchRun run;
  double client_before = bench::ProcessCpuSeconds(RUSAGE_CHILDREN);
  std::string out = bench::Run(cmd);
  run.client_cpu_seconds = bench::ProcessCpuSeconds(RUSAGE_CHILDREN) - client_before;
  auto at = out.find("tps = ");
  if (at == std::string::npos) throw std::runtime_error("no tps in pgbench output:\n" + out);
  run.tps = std::strtod(out.c_str() + at + 6, nullptr);
  return run;
}

std::string WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  if (!f) throw std::runtime_error("cannot write " + path);
  return path;
}

/// One phase's figures: the store and pgbench, each summed over the rounds.
struct Phase {
  Slice store;
  double raw_rows_per_s = 0;
  double raw_rows = 0;  // tps * seconds, for CPU per row
  double raw_client_cpu_seconds = 0;
  double json_rows_per_s = 0;  // the optional second script (client JSON), 0 when not run
  std::vector<double> round_ratios;
  double ratio() const { return store.rate() / raw_rows_per_s; }
};

/// Alternates `rounds` slices of the store and of pgbench (each `seconds / rounds` long, after a
/// CHECKPOINT), so load from other users of the machine hits both sides alike.
Phase RunPhase(core::EventStore& store, const std::string& store_db, const std::string& raw_db,
               const std::string& cluster, const Settings& settings, int writers, int per_append,
               const std::string& script, const std::string& stream_prefix,
               const std::string& json_script = "") {
  Phase p;
  int slice = std::max(1, static_cast<int>(settings.seconds / settings.rounds + 0.5));
  double raw_sum = 0;
  for (int r = 0; r < settings.rounds; ++r) {
    bench::Exec(cluster, "CHECKPOINT");
    Slice s = RunStore(store, store_db, writers, per_append, slice, stream_prefix);
    bench::Exec(cluster, "CHECKPOINT");
    PgbenchRun run = RunPgbench(raw_db, script, writers, slice);
    double raw = per_append * run.tps;
    raw_sum += raw;
    p.raw_rows += raw * slice;
    p.raw_client_cpu_seconds += run.client_cpu_seconds;
    if (!json_script.empty()) {
      bench::Exec(cluster, "CHECKPOINT");
      p.json_rows_per_s +=
          per_append * RunPgbench(raw_db, json_script, writers, slice).tps / settings.rounds;
    }
    p.round_ratios.push_back(s.rate() / raw);
    p.store.Add(s);
  }
  p.raw_rows_per_s = raw_sum / settings.rounds;
  return p;
}

void PrintPhase(const std::string& label, Phase& p, const std::string& raw_label) {
  Slice& s = p.store;
  auto per_event = [](double cpu, double n) { return n > 0 ? cpu * 1e6 / n : 0.0; };
  double n = static_cast<double>(s.events);
  std::printf(
      "%-22s store %7.0f events/s  %lld appends in %lld transactions (%.1f per commit); "
      "Append p50 %.2f ms, p99 %.2f ms; client CPU %.0f us/event\n",
      label.c_str(), s.rate(), s.appends, s.transactions,
      s.transactions ? static_cast<double>(s.appends) / s.transactions : 0.0,
      bench::Percentile(s.latencies_ms, 50), bench::Percentile(s.latencies_ms, 99),
      per_event(s.cpu_seconds, n));
  auto [lo, hi] = std::minmax_element(p.round_ratios.begin(), p.round_ratios.end());
  std::printf("%-22s raw   %7.0f rows/s    %s; pgbench CPU %.0f us/row\n", "", p.raw_rows_per_s,
              raw_label.c_str(), per_event(p.raw_client_cpu_seconds, p.raw_rows));
  if (p.json_rows_per_s > 0) {
    std::printf(
        "%-22s raw   %7.0f rows/s    same, but data and metadata sent as per-row JSON "
        "text (unnest of jsonb[] literals), as the store sends them; store/this %.2f\n",
        "", p.json_rows_per_s, s.rate() / p.json_rows_per_s);
  }
  std::printf("%-22s ratio %.2f (per round %.2f..%.2f)\n", "", p.ratio(), *lo, *hi);
}

Settings ParseArgs(int argc, char** argv) {
  Settings s;
  auto usage = [] {
    return std::runtime_error(
        "usage: bench_append [--seconds N] [--rounds N] [--levels 1,4,16] [--no-batch] "
        "[--batch-writers N] [--writer-connections N] [--no-notify]");
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    bool has_value = i + 1 < argc;
    if (a == "--seconds" && has_value) {
      s.seconds = std::atof(argv[++i]);
    } else if (a == "--rounds" && has_value) {
      s.rounds = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--levels" && has_value) {
      s.levels.clear();
      std::stringstream list(argv[++i]);
      std::string item;
      while (std::getline(list, item, ',')) s.levels.push_back(std::atoi(item.c_str()));
    } else if (a == "--no-batch") {
      s.batch = false;
    } else if (a == "--batch-writers" && has_value) {
      s.batch_writers = std::atoi(argv[++i]);
    } else if (a == "--writer-connections" && has_value) {
      s.writer_connections = std::atoi(argv[++i]);
    } else if (a == "--no-notify") {
      s.notify = false;
    } else {
      throw usage();
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows when piped
  Settings settings = ParseArgs(argc, argv);
  std::string cluster = bench::ClusterConninfo();
  std::string store_db = bench::FreshDatabase("bench_append");
  // The ceiling writes into a second migrated database: the very same table and indexes.
  std::string raw_db = bench::FreshDatabase("bench_append_raw");
  bench::Exec(raw_db, "CREATE SEQUENCE raw_version");

  char dir_template[] = "/tmp/bench-append-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) throw std::runtime_error("mkdtemp failed");
  std::string dir = dir_template;
  const std::string columns =
      "INSERT INTO events (stream_id, stream_version, event_id, type, schema_version, data, "
      "metadata) ";
  std::string single_script =
      WriteFile(dir + "/single.sql", columns +
                                         "VALUES ('raw-' || :client_id, nextval('raw_version'), "
                                         "gen_random_uuid(), 'bench.happened', 1, '{\"n\": 1}', '" +
                                         kMetadataJson + "');\n");
  std::string batch_script =
      WriteFile(dir + "/batch100.sql",
                columns +
                    "SELECT 'raw-b-' || :client_id, nextval('raw_version'), gen_random_uuid(), "
                    "'bench.happened', 1, jsonb_build_object('n', g), '" +
                    kMetadataJson + "'::jsonb FROM generate_series(1, 100) g;\n");
  std::vector<std::string> data, meta;
  for (int i = 0; i < 100; ++i) {
    data.push_back("{\"n\": " + std::to_string(i) + "}");
    meta.push_back(kMetadataJson);
  }
  std::string json_script =
      WriteFile(dir + "/batch100_json.sql",
                columns +
                    "SELECT 'raw-j-' || :client_id, nextval('raw_version'), gen_random_uuid(), "
                    "'bench.happened', 1, u.d, u.m FROM unnest('" +
                    core::PgArrayLiteral(data) + "'::jsonb[], '" + core::PgArrayLiteral(meta) +
                    "'::jsonb[]) AS u(d, m);\n");

  core::EventCatalogue catalogue = bench::BenchCatalogue();
  core::EventStoreOptions options;
  options.conninfo = store_db;
  if (settings.writer_connections > 0) options.writer_connections = settings.writer_connections;
  options.notify = settings.notify;
  core::EventStore store(options, catalogue, core::NullLogger());

  int slice = std::max(1, static_cast<int>(settings.seconds / settings.rounds + 0.5));
  std::printf(
      "bench_append: PostgreSQL at %s, fsync on; each phase runs the store and pgbench "
      "%d times %d s, alternating, CHECKPOINT before each slice\n",
      cluster.c_str(), settings.rounds, slice);
  std::printf(
      "store: EventStore (writer_connections %d, max_group_requests %d, notify %s); every "
      "writer appends to its own stream, ExpectedVersion::Any, and waits for its commit\n",
      options.writer_connections, options.max_group_requests, options.notify ? "on" : "off");
  std::printf(
      "raw:   pgbench -n -f SCRIPT -c C -j min(C,2) -T %d into a migrated copy of `events` "
      "(same table, same indexes), one INSERT per transaction (autocommit), C = the "
      "store's writer threads\n\n",
      slice);
  (void)RunStore(store, store_db, 4, 1, 1.0, "bench-warmup-w");  // connections and caches

  bench::JsonLine json("append");
  double ratio_single = 0;
  for (int writers : settings.levels) {
    Phase p =
        RunPhase(store, store_db, raw_db, cluster, settings, writers, 1, single_script, "bench-w");
    PrintPhase("single, " + std::to_string(writers) + " writer(s)", p,
               "1-row INSERT, -c " + std::to_string(writers));
    json.Num("single_" + std::to_string(writers), p.store.rate());
    if (writers == 16) {
      ratio_single = p.ratio();
      json.Num("raw_single_16", p.raw_rows_per_s).Num("ratio_single_16", ratio_single, 2);
    }
  }
  double ratio_batch = 0;
  if (settings.batch) {
    Phase p = RunPhase(store, store_db, raw_db, cluster, settings, settings.batch_writers, 100,
                       batch_script, "bench-batch-w", json_script);
    PrintPhase("batch100, " + std::to_string(settings.batch_writers) + " writers", p,
               "100-row INSERT, -c " + std::to_string(settings.batch_writers));
    ratio_batch = p.ratio();
    json.Num("batch100", p.store.rate())
        .Num("raw_batch100", p.raw_rows_per_s)
        .Num("ratio_batch100", ratio_batch, 2);
  }
  store.Stop();
  bench::Run("rm -rf " + bench::ShellQuote(dir));

  std::printf("\n");
  if (ratio_single > 0) {
    std::printf("target ratio_single_16 >= 2.0: %.2f, %s\n", ratio_single,
                ratio_single >= 2.0 ? "met" : "MISSED");
  }
  if (settings.batch) {
    std::printf("target ratio_batch100 >= 0.8: %.2f, %s\n", ratio_batch,
                ratio_batch >= 0.8 ? "met" : "MISSED");
  }
  std::cout << json.Done() << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_append: %s\n", e.what());
  return 1;
}
