// The event store against a real Postgres: appends, reads, and every refusal writes nothing.

#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "core/event_reader.h"
#include "core/event_store.h"
#include "core/ids.h"
#include "core/limits.h"
#include "core/pg.h"
#include "test/support/harness.h"

using namespace unidesk;
using core::AppendError;
using core::ExpectedVersion;

namespace {

core::NewEvent Ev(std::string data = "{\"n\": 1}", std::string type = "test.happened") {
  core::NewEvent e;
  e.type = std::move(type);
  e.data_json = std::move(data);
  e.metadata = {"user:alice", "corr-1", "", "test"};
  return e;
}

struct Fixture {
  test::TestDatabase db;
  core::EventCatalogue catalogue = test::TestCatalogue();
  core::EventStore store{{db.conninfo()}, catalogue, core::NullLogger()};

  long long Events() const { return db.Scalar("SELECT count(*) FROM events"); }
};

}  // namespace

TEST_CASE("an append is readable by position and by stream with its metadata") {
  Fixture f;
  auto r = f.store.Append({"test-a", ExpectedVersion::NoStream(), {Ev(), Ev("{\"n\": 2}")}, {}});
  REQUIRE(r.ok());
  CHECK(r.value().last_version == 1);
  CHECK(r.value().last.value == r.value().first.value + 1);
  auto conn = f.db.Connect();
  pqxx::read_transaction tx(*conn);
  auto all = core::ReadByPosition(tx, f.catalogue, core::Position{0}, 10);
  REQUIRE(all.size() == 2);
  CHECK(all[0].stream_id == "test-a");
  CHECK(all[0].stream_version == 0);
  CHECK(all[1].stream_version == 1);
  CHECK(all[0].metadata.actor == "user:alice");
  CHECK(all[0].metadata.correlation_id == "corr-1");
  CHECK(all[1].data_json == "{\"n\": 2}");
  auto stream = core::ReadStream(tx, f.catalogue, "test-a", 1, 10);
  REQUIRE(stream.size() == 1);
  CHECK(stream[0].position.value == r.value().last.value);
}

TEST_CASE("an unexpected stream version is a typed conflict and writes nothing") {
  Fixture f;
  REQUIRE(f.store.Append({"test-a", ExpectedVersion::NoStream(), {Ev()}, {}}).ok());
  auto again = f.store.Append({"test-a", ExpectedVersion::NoStream(), {Ev()}, {}});
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == AppendError::kVersionConflict);
  auto wrong = f.store.Append({"test-a", ExpectedVersion::Exactly(5), {Ev()}, {}});
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.error().code == AppendError::kVersionConflict);
  CHECK(wrong.error().message.find("is at 0, expected 5") != std::string::npos);
  CHECK(f.Events() == 1);
  CHECK(f.store.Append({"test-a", ExpectedVersion::Exactly(0), {Ev()}, {}}).ok());
  CHECK(f.Events() == 2);
}

TEST_CASE("a repeated idempotency key returns the original positions and writes nothing") {
  Fixture f;
  auto first = f.store.Append({"test-a", ExpectedVersion::Any(), {Ev()}, std::string("key-1")});
  REQUIRE(first.ok());
  auto repeat = f.store.Append({"test-a", ExpectedVersion::Any(), {Ev()}, std::string("key-1")});
  REQUIRE(repeat.ok());
  CHECK(repeat.value().repeated);
  CHECK(repeat.value().first.value == first.value().first.value);
  CHECK(f.Events() == 1);
}

TEST_CASE("a repeated idempotency key with a different body is refused and writes nothing") {
  Fixture f;
  REQUIRE(f.store.Append({"test-a", ExpectedVersion::Any(), {Ev()}, std::string("key-1")}).ok());
  auto other =
      f.store.Append({"test-a", ExpectedVersion::Any(), {Ev("{\"n\": 99}")}, std::string("key-1")});
  REQUIRE_FALSE(other.ok());
  CHECK(other.error().code == AppendError::kIdempotencyMismatch);
  CHECK(f.Events() == 1);
}

TEST_CASE("invalid JSON, oversized data, unknown types and bad ids are refused before Postgres") {
  Fixture f;
  auto check = [&](core::AppendRequest req, AppendError code, const char* fragment) {
    auto r = f.store.Append(std::move(req));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == code);
    CHECK_MESSAGE(r.error().message.find(fragment) != std::string::npos, r.error().message);
  };
  check({"test-a", ExpectedVersion::Any(), {Ev("{\"n\": ")}, {}}, AppendError::kInvalidJson,
        "invalid JSON at byte");
  check({"test-a", ExpectedVersion::Any(), {Ev("[1,2]")}, {}}, AppendError::kInvalidJson,
        "must be an object");
  check({"test-a", ExpectedVersion::Any(), {Ev("{\"s\": \"\xff\"}")}, {}},
        AppendError::kInvalidJson, "invalid JSON");
  std::string big = "{\"s\": \"" + std::string(core::kMaxEventDataBytes, 'x') + "\"}";
  check({"test-a", ExpectedVersion::Any(), {Ev(big)}, {}}, AppendError::kEventTooLarge,
        "the limit is 65536");
  check({"test-a", ExpectedVersion::Any(), {Ev("{}", "no.such.type")}, {}},
        AppendError::kUnknownEventType, "not in the catalogue");
  check({"bad stream id", ExpectedVersion::Any(), {Ev()}, {}}, AppendError::kInvalidRequest,
        "stream id");
  check({"test-a", ExpectedVersion::Any(), {}, {}}, AppendError::kInvalidRequest,
        "at least one event");
  core::NewEvent bad_id = Ev();
  bad_id.event_id = "not-a-uuid";
  check({"test-a", ExpectedVersion::Any(), {bad_id}, {}}, AppendError::kInvalidRequest, "UUID");
  CHECK(f.Events() == 0);
}

TEST_CASE("JSON that Postgres refuses is a typed error and does not fail other appends") {
  Fixture f;
  // RapidJSON accepts \u0000, jsonb does not: the store must map it, not crash or lose others.
  auto r = f.store.Append({"test-a", ExpectedVersion::Any(), {Ev("{\"s\": \"\\u0000\"}")}, {}});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == AppendError::kInvalidJson);
  CHECK(f.store.Append({"test-a", ExpectedVersion::Any(), {Ev()}, {}}).ok());
  CHECK(f.Events() == 1);
}

TEST_CASE("an old schema version is upcast on read") {
  Fixture f;
  {
    auto conn = f.db.Connect();
    pqxx::work tx(*conn);
    tx.exec(
        "INSERT INTO events (stream_id, stream_version, event_id, type, schema_version, data, "
        "metadata) VALUES ('test-v', 0, gen_random_uuid(), 'test.versioned', 1, '{\"a\": 1}', "
        "'{}')");
    tx.commit();
  }
  auto conn = f.db.Connect();
  pqxx::read_transaction tx(*conn);
  auto events = core::ReadStream(tx, f.catalogue, "test-v", 0, 10);
  REQUIRE(events.size() == 1);
  CHECK(events[0].schema_version == 2);
  CHECK(events[0].data_json.find("\"upcast\": true") != std::string::npos);
}

TEST_CASE("appending inside a caller's transaction commits with the caller's own rows") {
  Fixture f;
  auto conn = f.db.Connect();
  {
    pqxx::work tx(*conn);
    auto r = f.store.AppendInTransaction(tx, {"test-o", ExpectedVersion::Any(), {Ev()}, {}});
    REQUIRE(r.ok());
    tx.exec("CREATE TABLE business (x int)");
    tx.abort();  // both roll back together
  }
  CHECK(f.Events() == 0);
  {
    pqxx::work tx(*conn);
    tx.exec("CREATE TABLE business (x int)");
    auto r = f.store.AppendInTransaction(tx, {"test-o", ExpectedVersion::Any(), {Ev()}, {}});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == AppendError::kTransactionAlreadyWrote);
  }
}

TEST_CASE("20 parallel appends at the same expected version: exactly one succeeds") {
  Fixture f;
  REQUIRE(f.store.Append({"test-race", ExpectedVersion::NoStream(), {Ev()}, {}}).ok());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0}, conflict{0};
  for (int i = 0; i < 20; ++i) {
    threads.emplace_back([&] {
      auto r = f.store.Append({"test-race", ExpectedVersion::Exactly(0), {Ev()}, {}});
      if (r.ok()) ++ok;
      if (!r.ok() && r.error().code == AppendError::kVersionConflict) ++conflict;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok == 1);
  CHECK(conflict == 19);
  CHECK(f.Events() == 2);
}

TEST_CASE("appends racing on one stream all land: each group reads after its locks") {
  // A group sends its locks and its reads in one round trip. Were the reads' snapshot taken
  // before the lock was granted, the group queued behind another would read the old version and
  // fail on the (stream_id, stream_version) key.
  // Half append inside their own transactions: a group of one with no retry, so a stale read
  // would surface as an error here instead of being retried alone.
  Fixture f;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  std::vector<std::string> failures;
  std::mutex mu;
  for (int i = 0; i < 40; ++i) {
    threads.emplace_back([&, i] {
      core::AppendRequest request{
          "test-race-any", ExpectedVersion::Any(), {Ev(), Ev()}, "race-" + std::to_string(i)};
      std::string failure;
      try {
        if (i % 2) {
          auto conn = f.db.Connect();
          pqxx::work tx(*conn);
          auto r = f.store.AppendInTransaction(tx, std::move(request));
          tx.commit();
          if (!r.ok()) failure = r.error().message;
        } else {
          auto r = f.store.Append(std::move(request));
          if (!r.ok()) failure = r.error().message;
        }
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (failure.empty()) {
        ++ok;
      } else {
        std::lock_guard<std::mutex> g(mu);
        failures.push_back(failure);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures.empty());
  if (!failures.empty()) MESSAGE("first failure: " << failures.front());
  CHECK(ok == 40);
  CHECK(f.db.Scalar("SELECT max(stream_version) FROM events WHERE stream_id = 'test-race-any'") ==
        79);
  // Each key records its own request's two events.
  CHECK(f.db.Scalar("SELECT count(*) FROM idempotency_keys k WHERE last_position = "
                    "first_position + 1 AND last_version = (SELECT stream_version FROM events "
                    "WHERE position = k.last_position)") == 40);
}

TEST_CASE("asynchronous appends from one thread share a group and each gets its own result") {
  Fixture f;
  // Held so the groups wait: everything queued meanwhile must ride in the next group(s).
  auto holder = f.db.Connect();
  pqxx::work lock(*holder);
  lock.exec("LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE");
  constexpr int kAppends = 100;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::optional<core::AppendResult>> results(kAppends);
  int done = 0;
  for (int i = 0; i < kAppends; ++i) {
    // Stream 7 twice: the second expects no stream and must be refused, alone.
    std::string stream = "test-async-" + std::to_string(i == kAppends - 1 ? 7 : i);
    f.store.AppendAsync({stream, ExpectedVersion::NoStream(), {Ev()}, "async-" + std::to_string(i)},
                        [&, i](core::AppendResult r) {
                          std::lock_guard<std::mutex> g(mu);
                          results[i] = std::move(r);
                          ++done;
                          cv.notify_all();
                        });
  }
  {  // Refused before any I/O: answered inside the call, lock or no lock.
    std::optional<core::AppendResult> bad;
    f.store.AppendAsync({"test-async-bad", ExpectedVersion::Any(), {Ev("not json")}, {}},
                        [&](core::AppendResult r) { bad = std::move(r); });
    REQUIRE(bad.has_value());
    CHECK(bad->error().code == AppendError::kInvalidJson);
  }
  {
    std::lock_guard<std::mutex> g(mu);
    CHECK(done == 0);  // nothing answered while the groups wait
  }
  lock.commit();
  std::unique_lock<std::mutex> g(mu);
  REQUIRE(cv.wait_for(g, std::chrono::seconds(30), [&] { return done == kAppends; }));
  for (int i = 0; i < kAppends - 1; ++i) {
    REQUIRE_MESSAGE(results[i]->ok(), "append " << i << ": "
                                                << core::AppendErrorName(results[i]->error().code)
                                                << ": " << results[i]->error().message);
    CHECK(results[i]->value().last_version == 0);
  }
  CHECK(results[kAppends - 1]->error().code == AppendError::kVersionConflict);
  CHECK(f.Events() == kAppends - 1);
  // Two writer connections: at most two groups waited; the rest came in a few more.
  CHECK(f.db.Scalar("SELECT count(DISTINCT tx_id) FROM events") <= 6);
}

TEST_CASE(
    "an in-process observer hears of each committed append before its appender, with "
    "the log's tx_id and positions; refusals and repeats are not told") {
  test::TestDatabase db;
  core::EventCatalogue catalogue = test::TestCatalogue();
  core::EventStore store{{db.conninfo()}, catalogue, core::NullLogger()};
  std::mutex mu;
  std::vector<std::pair<std::string, core::AppendOutcome>> heard;
  store.OnCommitted([&](const core::AppendRequest& r, const core::AppendOutcome& o) {
    std::lock_guard<std::mutex> g(mu);
    heard.emplace_back(r.stream_id, o);
  });
  auto first = store.Append({"test-obs", ExpectedVersion::NoStream(), {Ev(), Ev()}, "obs-1"});
  REQUIRE(first.ok());
  {
    std::lock_guard<std::mutex> g(mu);
    REQUIRE(heard.size() == 1);  // told before Append returned
  }
  CHECK(store.Append({"test-obs", ExpectedVersion::NoStream(), {Ev()}, {}}).error().code ==
        AppendError::kVersionConflict);
  auto repeat = store.Append({"test-obs", ExpectedVersion::NoStream(), {Ev(), Ev()}, "obs-1"});
  REQUIRE(repeat.ok());
  CHECK(repeat.value().repeated);
  std::lock_guard<std::mutex> g(mu);
  REQUIRE(heard.size() == 1);
  CHECK(heard[0].first == "test-obs");
  CHECK(heard[0].second.first == first.value().first);
  CHECK(heard[0].second.last_version == 1);
  auto conn = db.Connect();
  pqxx::read_transaction tx(*conn);
  auto events = core::ReadStream(tx, catalogue, "test-obs", 0, 10);
  REQUIRE(events.size() == 2);
  CHECK(heard[0].second.tx_id == events[0].tx_id);
  CHECK(heard[0].second.tx_id != 0);
}

TEST_CASE("after Stop an asynchronous append is refused at once with kStopped") {
  Fixture f;
  f.store.Stop();
  std::optional<core::AppendResult> r;
  f.store.AppendAsync({"test-late", ExpectedVersion::Any(), {Ev()}, {}},
                      [&](core::AppendResult x) { r = std::move(x); });
  REQUIRE(r.has_value());
  CHECK(r->error().code == AppendError::kStopped);
}

TEST_CASE("a retry with the same event id after an unknown outcome writes one row") {
  Fixture f;
  core::NewEvent e = Ev();
  e.event_id = core::NewUuid();
  auto first = f.store.Append({"test-d", ExpectedVersion::Any(), {e}, {}});
  REQUIRE(first.ok());
  auto retry = f.store.Append({"test-d", ExpectedVersion::Any(), {e}, {}});
  REQUIRE(retry.ok());
  CHECK(retry.value().repeated);
  CHECK(retry.value().first.value == first.value().first.value);
  core::NewEvent other = Ev("{}", "test.versioned");
  other.event_id = e.event_id;
  auto clash = f.store.Append({"test-d", ExpectedVersion::Any(), {other}, {}});
  REQUIRE_FALSE(clash.ok());
  CHECK(clash.error().code == AppendError::kDuplicateEventId);
  CHECK(f.Events() == 1);
}

TEST_CASE("Postgres unreachable: the append says so and nothing hangs") {
  core::EventCatalogue catalogue = test::TestCatalogue();
  core::EventStore store({"host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2"}, catalogue,
                         core::NullLogger());
  auto r = store.Append({"test-a", ExpectedVersion::Any(), {Ev()}, {}});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == AppendError::kUnavailable);
}

TEST_CASE("a prepared key lookup made on a young table still uses the index once it has grown") {
  // The append's idempotency-key lookup runs as a prepared statement on a long-lived
  // connection. Postgres would cache a generic plan after five calls; made while the table had
  // a few rows, that plan is a sequential scan and stays one as the table grows.
  Fixture f;
  auto conn = core::Connect(f.db.conninfo());
  const std::string sql = "SELECT key FROM idempotency_keys WHERE key = ANY($1::text[])";
  {
    pqxx::nontransaction tx(*conn);
    tx.exec(
        "INSERT INTO idempotency_keys (key, request_hash, stream_id, first_position, "
        "last_position, last_version) VALUES ('k0', 'h', 's', 1, 1, 0)");
    tx.exec("VACUUM ANALYZE idempotency_keys");  // the statistics of a young table: one row
  }
  {
    pqxx::work tx(*conn);
    for (int i = 0; i < 8; ++i) core::ExecPrepared(tx, "keys_probe", sql, "{k0,k1,k2}");
    tx.exec(
        "INSERT INTO idempotency_keys (key, request_hash, stream_id, first_position, "
        "last_position, last_version) SELECT 'key-' || i, md5(i::text), 's', i, i, 0 "
        "FROM generate_series(1, 20000) i");
    tx.commit();
  }
  pqxx::work tx(*conn);
  std::string plan;
  for (const auto& r : tx.exec("EXPLAIN EXECUTE keys_probe('{k0,k1,k2}')")) {
    plan += std::string(r[0].c_str()) + "\n";
  }
  CAPTURE(plan);
  CHECK(plan.find("Seq Scan") == std::string::npos);
  CHECK(plan.find("idempotency_keys_pkey") != std::string::npos);
}
