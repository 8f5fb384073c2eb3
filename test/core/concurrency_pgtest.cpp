// The ordering guarantee under load: 8 writers (grouped and in-transaction appends, random delays,
// rollbacks) on shared and distinct streams while 3 subscribers follow live, one of them with
// tiny batches and random restarts. Every committed event is seen exactly once by each
// subscriber and each stream arrives in version order.

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <random>
#include <thread>

#include "core/event_store.h"
#include "core/subscription.h"
#include "test/support/harness.h"
#include "test/support/recording_handler.h"

using namespace unidesk;
using core::ExpectedVersion;

namespace {

constexpr int kWriters = 8;
// UNIDESK_CONCURRENCY_EVENTS shrinks the run while debugging; the issue asks for 5,000.
const int kEventsPerWriter = [] {
  const char* v = std::getenv("UNIDESK_CONCURRENCY_EVENTS");
  return v ? std::atoi(v) : 5000;
}();

core::NewEvent Ev(int writer, int i) {
  core::NewEvent e;
  e.type = "test.happened";
  e.data_json = "{\"w\": " + std::to_string(writer) + ", \"i\": " + std::to_string(i) + "}";
  e.metadata = {"test:writer-" + std::to_string(writer), "c", "", "test"};
  return e;
}

void Writer(int w, const std::string& conninfo, core::EventStore& store,
            std::atomic<int>& rolled_back) {
  std::mt19937 rng(1000 + w);
  pqxx::connection conn(conninfo);
  int committed = 0;
  while (committed < kEventsPerWriter) {
    std::string stream =
        rng() % 2 ? "test-w" + std::to_string(w) : "test-shared-" + std::to_string(rng() % 3);
    int k = std::min<int>(1 + (rng() % 100 < 20 ? rng() % 5 : 0), kEventsPerWriter - committed);
    std::vector<core::NewEvent> events;
    for (int i = 0; i < k; ++i) events.push_back(Ev(w, committed + i));
    int path = rng() % 100;
    if (path < 70) {
      auto r = store.Append({stream, ExpectedVersion::Any(), events, {}});
      CHECK_MESSAGE(r.ok(), r.error().message);
      if (!r.ok()) return;
      committed += k;
    } else {
      pqxx::work tx(conn);
      auto r = store.AppendInTransaction(tx, {stream, ExpectedVersion::Any(), events, {}});
      CHECK_MESSAGE(r.ok(), r.error().message);
      if (!r.ok()) return;
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
      if (rng() % 100 < 10) {
        tx.abort();
        ++rolled_back;
      } else {
        tx.commit();
        store.NotifyCommitted();
        committed += k;
      }
    }
    if (rng() % 100 < 10) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 1000));
  }
}

core::SubscriptionOptions Options(const std::string& name, const std::string& conninfo, int batch) {
  core::SubscriptionOptions o;
  o.name = name;
  o.conninfo = conninfo;
  o.batch_size = batch;
  o.poll_interval = std::chrono::milliseconds(200);
  return o;
}

}  // namespace

TEST_CASE("every subscriber sees every committed event exactly once, each stream in order") {
  test::TestDatabase db;
  auto admin = db.Connect();
  test::CreateSeenTable(*admin);
  core::EventCatalogue catalogue = test::TestCatalogue();
  core::EventStore store({db.conninfo()}, catalogue, core::NullLogger());

  test::RecordingHandler ha("a"), hb("b"), hc("c");
  core::Subscription a(Options("a", db.conninfo(), 500), catalogue, ha, core::NullLogger());
  core::Subscription b(Options("b", db.conninfo(), 50), catalogue, hb, core::NullLogger());
  auto c = std::make_unique<core::Subscription>(Options("c", db.conninfo(), 7), catalogue, hc,
                                                core::NullLogger());
  a.Start();
  b.Start();
  c->Start();

  std::atomic<int> rolled_back{0};
  std::atomic<bool> writing{true};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] { Writer(w, db.conninfo(), store, rolled_back); });
  }
  // Subscriber c is stopped and started again at random moments while the writers run.
  int restarts = 0;
  std::thread restarter([&] {
    std::mt19937 rng(7);
    while (writing) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 300));
      c.reset();
      c = std::make_unique<core::Subscription>(Options("c", db.conninfo(), 7), catalogue, hc,
                                               core::NullLogger());
      c->Start();
      ++restarts;
    }
  });
  for (auto& t : writers) t.join();
  writing = false;
  restarter.join();

  const long long total = kWriters * kEventsPerWriter;
  REQUIRE(db.Scalar("SELECT count(*) FROM events") == total);
  CHECK(rolled_back > 0);
  CHECK(restarts > 0);
  bool all = test::WaitUntil([&] { return db.Scalar("SELECT count(*) FROM seen") >= 3 * total; },
                             std::chrono::seconds(180), std::chrono::milliseconds(200));
  CHECK(all);
  for (std::string sub : {"a", "b", "c"}) {
    CAPTURE(sub);
    std::string s = "'" + sub + "'";
    if (db.Scalar("SELECT count(*) FROM seen WHERE sub = " + s) != total) {
      auto conn = db.Connect();
      pqxx::read_transaction tx(*conn);
      auto rows = tx.exec(
          "SELECT s.position, e.tx_id::text, s.stream_id, s.stream_version, s.seq "
          "FROM seen s JOIN events e USING (position) WHERE s.sub = " +
          s + " AND s.position IN (SELECT position FROM seen WHERE sub = " + s +
          " GROUP BY 1 HAVING count(*) > 1) ORDER BY s.seq LIMIT 20");
      for (const auto& r : rows) {
        MESSAGE("duplicate: position " << std::string(r[0].c_str()) << " tx "
                                       << std::string(r[1].c_str()) << " seq "
                                       << std::string(r[4].c_str()));
      }
    }
    CHECK(db.Scalar("SELECT count(*) FROM seen WHERE sub = " + s) == total);
    CHECK(db.Scalar("SELECT count(DISTINCT position) FROM seen WHERE sub = " + s) == total);
    CHECK(db.Scalar("SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM seen x WHERE "
                    "x.sub = " +
                    s + " AND x.position = e.position)") == 0);
    // Within each stream, delivery order is version order with no gap, starting at 0.
    CHECK(db.Scalar(
              "SELECT count(*) FROM (SELECT stream_version, lag(stream_version) OVER (PARTITION "
              "BY stream_id ORDER BY seq) AS prev FROM seen WHERE sub = " +
              s + ") t WHERE coalesce(prev, -1) <> stream_version - 1") == 0);
  }
  a.Stop();
  b.Stop();
  c->Stop();
}
