// Benchmark: rebuild of the audit projection over 1,000,000 events (reset + one catch-up
// subscription), beside a raw ordered read of the same rows.

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <pqxx/tablewriter>
#include <string>
#include <vector>

#include "core/pg.h"
#include "core/projection.h"
#include "core/subscription.h"
#include "projections/audit_projector.h"
#include "test/bench/bench_util.h"

using namespace unidesk;
using bench::Clock;

namespace {

struct Settings {
  long long events = 1'000'000;
  int batch_size = 5000;
  int load_chunk = 1000;  // events per loading transaction, like appends of 1000 events
  bool compare_writers = false;
};

/// The audit projector, timing its Apply calls.
class TimedProjector : public core::Projector {
 public:
  explicit TimedProjector(const core::Projector& inner) : inner_(inner) {}
  std::string name() const override { return inner_.name(); }
  std::vector<std::string> tables() const override { return inner_.tables(); }
  bool reads_data() const override { return inner_.reads_data(); }
  void Apply(const core::RecordedEvent& event, core::RowChanges& out) const override {
    auto t0 = Clock::now();
    inner_.Apply(event, out);
    apply_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
  }
  mutable std::int64_t apply_ns = 0;

 private:
  const core::Projector& inner_;
};

/// Times a handler's Handle (for the projection: Apply of the batch + WriteRowChanges).
class TimedHandler : public core::SubscriptionHandler {
 public:
  explicit TimedHandler(core::SubscriptionHandler& inner) : inner_(inner) {}
  void Handle(pqxx::work& tx, const std::vector<core::RecordedEvent>& batch) override {
    auto t0 = Clock::now();
    inner_.Handle(tx, batch);
    handle_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
  }
  std::int64_t handle_ns = 0;

 private:
  core::SubscriptionHandler& inner_;
};

class NoopHandler : public core::SubscriptionHandler {
 public:
  void Handle(pqxx::work&, const std::vector<core::RecordedEvent>&) override {}
};

/// Prototype writer for --compare-writers: each run of same-shape inserts becomes one
/// INSERT ... SELECT FROM unnest($1::text[], ...) with a text array per column, cast to the
/// column types (the shape of the append path's INSERT). No NULLs: the audit projector writes none.
class UnnestProjectionHandler : public core::SubscriptionHandler {
 public:
  explicit UnnestProjectionHandler(const core::Projector& projector) : projector_(projector) {}
  void Handle(pqxx::work& tx, const std::vector<core::RecordedEvent>& batch) override {
    scratch_.clear();
    for (const auto& e : batch) projector_.Apply(e, scratch_);
    const auto& changes = scratch_.changes();
    std::size_t i = 0;
    while (i < changes.size()) {
      const core::RowChange& c = changes[i];
      if (c.op != core::RowChange::Op::kInsert) {
        core::WriteRowChanges(tx, {c});
        ++i;
        continue;
      }
      std::vector<std::vector<std::string>> columns(c.columns.size());
      for (; i < changes.size() && changes[i].op == core::RowChange::Op::kInsert &&
             changes[i].table == c.table && changes[i].columns == c.columns;
           ++i) {
        for (std::size_t k = 0; k < c.columns.size(); ++k)
          columns[k].push_back(*changes[i].values[k]);
      }
      std::vector<std::string> arrays;
      std::string select;
      std::string names;
      for (std::size_t k = 0; k < c.columns.size(); ++k) {
        arrays.push_back(core::PgArrayLiteral(columns[k]));
        std::string n = std::to_string(k + 1);
        select += std::string(k ? ", " : "") + "u.c" + n + "::" + TypeOf(tx, c.table, c.columns[k]);
        names += std::string(k ? ", " : "") + "c" + n;
      }
      std::string params;
      for (std::size_t k = 0; k < arrays.size(); ++k) {
        params += std::string(k ? ", " : "") + "$" + std::to_string(k + 1) + "::text[]";
      }
      tx.exec_params("INSERT INTO " + tx.quote_name(c.table) + " (" + JoinNames(tx, c.columns) +
                         ") SELECT " + select + " FROM unnest(" + params + ") AS u(" + names + ")",
                     pqxx::prepare::make_dynamic_params(arrays));
    }
  }

 private:
  static std::string JoinNames(pqxx::transaction_base& tx, const std::vector<std::string>& names) {
    std::string out;
    for (std::size_t k = 0; k < names.size(); ++k) out += (k ? ", " : "") + tx.quote_name(names[k]);
    return out;
  }
  std::string TypeOf(pqxx::transaction_base& tx, const std::string& table,
                     const std::string& column) {
    auto key = table + "." + column;
    auto it = types_.find(key);
    if (it != types_.end()) return it->second;
    auto r = tx.exec_params(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attname = $2",
        table, column);
    return types_[key] = r[0][0].c_str();
  }
  const core::Projector& projector_;
  core::RowChanges scratch_;
  std::map<std::string, std::string> types_;
};

/// Writes `n` events straight into `events` with SQL, `chunk` per transaction (one tx_id each),
/// with the metadata keys the audit projector reads.
void Load(const std::string& conninfo, long long n, int chunk) {
  pqxx::connection c(conninfo);
  for (long long lo = 0; lo < n; lo += chunk) {
    long long hi = std::min(n, lo + chunk) - 1;
    pqxx::work tx(c);
    tx.exec_params(
        "INSERT INTO events (stream_id, stream_version, event_id, type, schema_version, data, "
        "metadata) SELECT 'bench-' || (g % 1000), g / 1000, gen_random_uuid(), 'bench.happened', "
        "1, jsonb_build_object('n', g, 'task', 'task-' || (g % 10000), 'node', 'gpu-' || (g % 8)), "
        "jsonb_build_object('actor', 'user:bench-' || (g % 50), 'correlation_id', "
        "'corr-' || (g / 10), 'causation_id', 'cause-' || g, 'source', 'bench') "
        "FROM generate_series($1::bigint, $2::bigint) g",
        lo, hi);
    tx.commit();
  }
}

/// Reads every event in (tx_id, position) order in batches of `batch` with the audit reader's
/// column list (the data skipped: core::EventData::kSkip), one transaction per batch; returns
/// rows read.
long long RawRead(const std::string& conninfo, int batch) {
  pqxx::connection c(conninfo);
  std::string after_tx = "0";
  long long after_pos = 0;
  long long rows = 0;
  std::size_t bytes = 0;
  for (;;) {
    pqxx::read_transaction tx(c);
    auto r = tx.exec_params(
        "SELECT position, tx_id::text, stream_id, stream_version, event_id::text, type, "
        "schema_version, '{}', metadata::text, "
        "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
        "FROM events WHERE (tx_id, position) > ($1::text::xid8, $2::bigint) "
        "ORDER BY events.tx_id, events.position LIMIT $3",
        after_tx, after_pos, batch);
    tx.commit();
    if (r.empty()) break;
    for (const auto& row : r) {
      for (const auto& f : row) bytes += f.size();
    }
    rows += static_cast<long long>(r.size());
    after_pos = r[r.size() - 1][0].as<long long>();
    after_tx = r[r.size() - 1][1].c_str();
  }
  if (bytes == 0) throw std::runtime_error("raw read saw no data");
  return rows;
}

/// Resets `projector` and replays the whole log into it through `handler` with one catch-up
/// subscription; checks every event arrived and left one row. Returns the seconds it took.
double Rebuild(const std::string& db, const core::EventCatalogue& catalogue,
               const core::Projector& projector, core::SubscriptionHandler& handler, int batch_size,
               long long expected) {
  core::SubscriptionOptions options;
  options.name = projector.name();
  options.conninfo = db;
  options.batch_size = batch_size;
  options.listen = false;
  options.data = projector.reads_data() ? core::EventData::kRead : core::EventData::kSkip;
  auto t0 = Clock::now();
  {
    pqxx::connection c(db);
    pqxx::work tx(c);
    core::ResetProjection(tx, projector);
    tx.commit();
  }
  core::Subscription subscription(options, catalogue, handler, core::NullLogger());
  std::int64_t delivered = subscription.CatchUp();
  auto t1 = Clock::now();
  long long rows = bench::Scalar(db, "SELECT count(*) FROM audit_log");
  if (delivered != expected || rows != expected) {
    throw std::runtime_error("rebuild delivered " + std::to_string(delivered) +
                             " events and left " + std::to_string(rows) + " audit rows; expected " +
                             std::to_string(expected));
  }
  return bench::Seconds(t0, t1);
}

/// Like Rebuild, but drops the projector's secondary (non-unique) indexes first and creates them
/// again once caught up, inside the measured time (a prototype of a deferred-index rebuild).
double RebuildDeferringIndexes(const std::string& db, const core::EventCatalogue& catalogue,
                               const core::Projector& projector, core::SubscriptionHandler& handler,
                               int batch_size, long long expected) {
  auto t0 = Clock::now();
  std::vector<std::string> create;
  {
    pqxx::connection c(db);
    pqxx::work tx(c);
    for (const auto& table : projector.tables()) {
      auto r = tx.exec_params(
          "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
          "WHERE i.indrelid = $1::regclass AND NOT i.indisunique",
          table);
      for (const auto& row : r) {
        tx.exec("DROP INDEX " + std::string(row[0].c_str()));
        create.push_back(row[1].c_str());
      }
    }
    tx.commit();
  }
  double replay = Rebuild(db, catalogue, projector, handler, batch_size, expected);
  (void)replay;
  {
    pqxx::connection c(db);
    pqxx::work tx(c);
    for (const auto& sql : create) tx.exec(sql);
    tx.commit();
  }
  return bench::Seconds(t0, Clock::now());
}

/// The same rows written by one INSERT ... SELECT inside Postgres: what the table and its
/// indexes cost without any client.
double SqlFloor(const std::string& db) {
  bench::Exec(db, "TRUNCATE audit_log");
  auto t0 = Clock::now();
  bench::Exec(db,
              "INSERT INTO audit_log SELECT position, recorded_at, "
              "coalesce(nullif(metadata->>'actor', ''), 'unknown'), type, stream_id, "
              "metadata->>'correlation_id', metadata->>'causation_id', metadata->>'source', "
              "event_id FROM events");
  return bench::Seconds(t0, Clock::now());
}

Settings ParseArgs(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--events" && i + 1 < argc) {
      s.events = std::atoll(argv[++i]);
    } else if (a == "--batch-size" && i + 1 < argc) {
      s.batch_size = std::atoi(argv[++i]);
    } else if (a == "--compare-writers") {
      s.compare_writers = true;
    } else {
      throw std::runtime_error(
          "usage: bench_replay [--events N] [--batch-size N] [--compare-writers]");
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows when piped
  Settings settings = ParseArgs(argc, argv);
  std::string cluster = bench::ClusterConninfo();
  std::string db = bench::FreshDatabase("bench_replay");
  core::EventCatalogue catalogue = bench::BenchCatalogue();
  std::printf("bench_replay: PostgreSQL at %s, fsync on\n", cluster.c_str());

  auto t0 = Clock::now();
  Load(db, settings.events, settings.load_chunk);
  auto t1 = Clock::now();
  bench::Exec(db, "VACUUM (ANALYZE) events");
  bench::Exec(cluster, "CHECKPOINT");
  long long n = bench::Scalar(db, "SELECT count(*) FROM events");
  std::printf(
      "loaded %lld events by INSERT ... SELECT generate_series, %d per transaction, in %.1f s; "
      "VACUUM (ANALYZE); warmed by count(*) and the raw read just before the rebuild\n\n",
      n, settings.load_chunk, bench::Seconds(t0, t1));

  auto r0 = Clock::now();
  long long raw_rows = RawRead(db, settings.batch_size);
  double raw_rate = static_cast<double>(raw_rows) / bench::Seconds(r0, Clock::now());
  std::printf(
      "ceiling: raw read of the same rows in (tx_id, position) order, keyset batches of "
      "%d with the audit reader's columns (no data), through libpqxx: %.0f rows/s\n",
      settings.batch_size, raw_rate);

  NoopHandler noop;
  core::SubscriptionOptions read_options;
  read_options.name = "bench-read-only";
  read_options.conninfo = db;
  read_options.batch_size = settings.batch_size;
  read_options.listen = false;
  read_options.data = core::EventData::kSkip;  // as the audit projector reads
  {
    core::Subscription read_only(read_options, catalogue, noop, core::NullLogger());
    auto e0 = Clock::now();
    std::int64_t got = read_only.CatchUp();
    std::printf("engine without writes: a subscription with a no-op handler: %.0f events/s\n\n",
                static_cast<double>(got) / bench::Seconds(e0, Clock::now()));
  }

  projections::AuditProjector audit;
  TimedProjector timed_audit(audit);
  core::ProjectionHandler projection(timed_audit);
  TimedHandler handler(projection);
  double secs = Rebuild(db, catalogue, audit, handler, settings.batch_size, n);
  double rate = static_cast<double>(n) / secs;
  double handle_s = handler.handle_ns / 1e9;
  double apply_s = timed_audit.apply_ns / 1e9;
  std::printf(
      "rebuild of 'audit' (ResetProjection, then one Subscription, batch_size %d, listen "
      "off, CatchUp):\n",
      settings.batch_size);
  std::printf(
      "  %lld events in %.2f s = %.0f events/s (%.0f%% of the raw read); audit_log has "
      "%lld rows\n",
      n, secs, rate, 100 * rate / raw_rate, n);
  std::printf(
      "  where the time went: Apply %.2f s, WriteRowChanges %.2f s, read + checkpoint + "
      "commit %.2f s\n",
      apply_s, handle_s - apply_s, secs - handle_s);

  if (settings.compare_writers) {
    UnnestProjectionHandler unnest(audit);
    double unnest_s = Rebuild(db, catalogue, audit, unnest, settings.batch_size, n);
    core::ProjectionHandler copy_deferred(audit);
    double deferred_s =
        RebuildDeferringIndexes(db, catalogue, audit, copy_deferred, settings.batch_size, n);
    double floor_s = SqlFloor(db);
    std::printf("compare writers (same rebuild; the unnest one is a prototype in this file):\n");
    std::printf("  COPY (WriteRowChanges, the engine)    %8.0f events/s\n", rate);
    std::printf("  INSERT ... SELECT unnest(text[])      %8.0f events/s\n", n / unnest_s);
    std::printf("  COPY, secondary indexes built after   %8.0f events/s\n", n / deferred_s);
    std::printf("  one INSERT ... SELECT in SQL (floor)  %8.0f rows/s\n", n / floor_s);
  }
  std::printf("\ntarget: >= 50,000 events/s: %s\n", rate >= 50000 ? "met" : "MISSED");
  std::cout << bench::JsonLine("replay")
                   .Num("events", static_cast<double>(n))
                   .Num("events_per_s", rate)
                   .Done()
            << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_replay: %s\n", e.what());
  return 1;
}
