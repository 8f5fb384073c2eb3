// Benchmark: latency from an append's commit to a subscriber's handler at a steady 1,000 events/s,
// beside the raw NOTIFY -> LISTEN latency of the same cluster.

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/event_store.h"
#include "core/subscription.h"
#include "test/bench/bench_util.h"

using namespace unidesk;
using bench::Clock;

namespace {

struct Settings {
  double seconds = 20;
  int rate = 1000;  // appends (of one event) per second
  int raw_notifies = 1000;
  int appenders = 16;  // threads sharing the schedule, so a slow Append does not lower the rate
  long notify_interval_us = -1;  // -1: the store's default
  bool async_commit = false;     // the subscriber's commits do not wait for their WAL flush
};

/// Remembers when each event first reached the handler (a retried batch keeps the first time).
class RecordingHandler : public core::SubscriptionHandler {
 public:
  explicit RecordingHandler(bool async_commit) : async_commit_(async_commit) {}
  void Handle(pqxx::work& tx, const std::vector<core::RecordedEvent>& batch) override {
    auto now = Clock::now();
    // Diagnostic (--async-commit): the step's checkpoint commit does not wait for its WAL flush.
    if (async_commit_) tx.exec("SET LOCAL synchronous_commit = off");
    std::lock_guard<std::mutex> lock(mu_);
    ++batches_;
    for (const auto& e : batch) seen_.emplace(e.position.value, now);
  }
  std::size_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_.size();
  }
  long long batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }
  std::map<std::int64_t, Clock::time_point> seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  std::mutex mu_;
  bool async_commit_;
  std::map<std::int64_t, Clock::time_point> seen_;
  long long batches_ = 0;
};

struct Latencies {
  std::vector<double> ms;
  long long early = 0;  // seen by the handler before Append returned (clamped to 0)
  long long missing = 0;
};

Latencies Measure(const std::vector<std::pair<std::int64_t, Clock::time_point>>& committed,
                  const std::map<std::int64_t, Clock::time_point>& seen) {
  Latencies out;
  for (const auto& [position, t_commit] : committed) {
    auto it = seen.find(position);
    if (it == seen.end()) {
      ++out.missing;
      continue;
    }
    double ms = bench::Millis(t_commit, it->second);
    if (ms < 0) {
      ++out.early;
      ms = 0;
    }
    out.ms.push_back(ms);
  }
  return out;
}

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

core::NewEvent BenchEvent(long long n) {
  core::NewEvent e;
  e.type = "bench.happened";
  e.data_json = "{\"n\": " + std::to_string(n) + "}";
  e.metadata = {"bench-user", "bench-corr", "", "bench"};
  return e;
}

/// Single-event appends on one fixed schedule (`rate` per second), shared by `threads` appender
/// threads so a slow Append does not lower the rate; each appends to its own stream. Returns the
/// position of each event and the time its Append returned.
std::vector<std::pair<std::int64_t, Clock::time_point>> PacedAppends(core::EventStore& store,
                                                                     int rate, int threads,
                                                                     double seconds,
                                                                     double* achieved_rate) {
  auto total = static_cast<long long>(rate * seconds);
  std::vector<std::pair<std::int64_t, Clock::time_point>> out(total);
  std::atomic<long long> next{0};
  std::atomic<bool> failed{false};
  std::string error;
  auto start = Clock::now() + std::chrono::milliseconds(5);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::string stream = "bench-deliver-" + std::to_string(t);
      for (long long i = next++; i < total && !failed; i = next++) {
        std::this_thread::sleep_until(start + std::chrono::nanoseconds(i * 1'000'000'000LL / rate));
        auto r = store.Append({stream, core::ExpectedVersion::Any(), {BenchEvent(i)}, {}});
        auto t_commit = Clock::now();
        if (!r.ok()) {
          error = std::string(core::AppendErrorName(r.error().code)) + ": " + r.error().message;
          failed = true;
          return;
        }
        out[i] = {r.value().first.value, t_commit};
      }
    });
  }
  for (auto& t : pool) t.join();
  if (failed) throw std::runtime_error("append failed: " + error);
  *achieved_rate = static_cast<double>(total) / bench::Seconds(start, Clock::now());
  return out;
}

class RawReceiver : public pqxx::notification_receiver {
 public:
  RawReceiver(pqxx::connection& c, std::vector<Clock::time_point>& at)
      : notification_receiver(c, "bench_raw"), at_(at) {}
  void operator()(const std::string& payload, int) override {
    at_[std::stoul(payload)] = Clock::now();
    ++received;
  }
  int received = 0;

 private:
  std::vector<Clock::time_point>& at_;
};

/// `n` pg_notify calls (autocommit, one per millisecond) from one connection; a listener on a
/// second connection timestamps each. Returns {from before the send, from the send's return}.
std::pair<std::vector<double>, std::vector<double>> RawNotifyLatency(const std::string& conninfo,
                                                                     int n) {
  std::vector<Clock::time_point> sent(n), returned(n), received(n);
  std::atomic<bool> listening{false};
  std::atomic<bool> timed_out{false};
  std::thread listener([&] {
    pqxx::connection c(conninfo);
    RawReceiver receiver(c, received);
    listening = true;
    auto deadline = Clock::now() + std::chrono::seconds(30);
    while (receiver.received < n) {
      if (Clock::now() > deadline) {
        timed_out = true;
        return;
      }
      c.await_notification(0, 100'000);
    }
  });
  while (!listening) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  {
    pqxx::connection c(conninfo);
    pqxx::nontransaction tx(c);
    auto start = Clock::now();
    for (int i = 0; i < n; ++i) {
      std::this_thread::sleep_until(start + std::chrono::milliseconds(i));
      sent[i] = Clock::now();
      tx.exec("SELECT pg_notify('bench_raw', '" + std::to_string(i) + "')");
      returned[i] = Clock::now();
    }
  }
  listener.join();
  if (timed_out) throw std::runtime_error("raw NOTIFY: not every notification arrived in 30 s");
  std::vector<double> from_send, from_return;
  for (int i = 0; i < n; ++i) {
    from_send.push_back(bench::Millis(sent[i], received[i]));
    from_return.push_back(std::max(0.0, bench::Millis(returned[i], received[i])));
  }
  return {from_send, from_return};
}

Settings ParseArgs(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      s.seconds = std::atof(argv[++i]);
    } else if (a == "--rate" && i + 1 < argc) {
      s.rate = std::atoi(argv[++i]);
    } else if (a == "--notify-interval-us" && i + 1 < argc) {
      s.notify_interval_us = std::atol(argv[++i]);
    } else if (a == "--async-commit") {
      s.async_commit = true;
    } else if (a == "--appenders" && i + 1 < argc) {
      s.appenders = std::atoi(argv[++i]);
    } else {
      throw std::runtime_error(
          "usage: bench_deliver [--seconds N] [--rate EVENTS_PER_S] [--appenders N] "
          "[--notify-interval-us N] [--async-commit]");
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows when piped
  Settings settings = ParseArgs(argc, argv);
  std::string cluster = bench::ClusterConninfo();
  std::string db = bench::FreshDatabase("bench_deliver");
  core::EventCatalogue catalogue = bench::BenchCatalogue();
  core::EventStoreOptions store_options;
  store_options.conninfo = db;
  if (settings.notify_interval_us >= 0) {
    store_options.notify_min_interval = std::chrono::microseconds(settings.notify_interval_us);
  }
  core::EventStore store(store_options, catalogue, core::NullLogger());
  RecordingHandler handler(settings.async_commit);
  core::SubscriptionOptions sub_options;
  sub_options.name = "bench-deliver";
  sub_options.conninfo = db;
  core::Subscription subscription(sub_options, catalogue, handler, core::NullLogger());
  subscription.Start();
  if (!WaitFor([&] { return subscription.status().owner; }, std::chrono::seconds(10))) {
    throw std::runtime_error("the subscription did not take ownership in 10 s");
  }

  std::printf("bench_deliver: PostgreSQL at %s, fsync on\n", cluster.c_str());
  std::printf(
      "store: EventStore (notify on, notify_min_interval %lld us); subscription "
      "'bench-deliver' with LISTEN, batch_size %d%s\n",
      static_cast<long long>(store_options.notify_min_interval.count()), sub_options.batch_size,
      settings.async_commit ? ", synchronous_commit off in its transactions" : "");
  std::printf(
      "latency = handler time - time Append returned, clamped at 0 (the handler can see "
      "an event before Append returns to its caller)\n\n");
  double warm_rate = 0;
  auto warm = PacedAppends(store, settings.rate, settings.appenders, 1.0, &warm_rate);
  if (!WaitFor([&] { return handler.count() >= warm.size(); }, std::chrono::seconds(10))) {
    throw std::runtime_error("warm-up events were not delivered in 10 s");
  }

  double rate = 0;
  auto committed = PacedAppends(store, settings.rate, settings.appenders, settings.seconds, &rate);
  std::size_t expected = warm.size() + committed.size();
  bool all = WaitFor([&] { return handler.count() >= expected; }, std::chrono::seconds(30));
  subscription.Stop();
  store.Stop();
  Latencies lat = Measure(committed, handler.seen());
  if (!all || lat.missing > 0) {
    throw std::runtime_error(std::to_string(lat.missing) + " events never reached the handler");
  }
  double max_ms = *std::max_element(lat.ms.begin(), lat.ms.end());
  double p50 = bench::Percentile(lat.ms, 50);
  double p90 = bench::Percentile(lat.ms, 90);
  double p99 = bench::Percentile(lat.ms, 99);
  auto [raw_send, raw_return] = RawNotifyLatency(db, settings.raw_notifies);

  std::printf(
      "store:   %zu events at %.0f appends/s (target %d/s, %d appender threads on one "
      "schedule) for %.0f s; the handler got them in %lld batches\n",
      lat.ms.size(), rate, settings.rate, settings.appenders, settings.seconds, handler.batches());
  std::printf(
      "         commit -> handler  p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  max %.3f ms  "
      "(%lld of %zu seen before Append returned, counted as 0)\n",
      p50, p90, p99, max_ms, lat.early, lat.ms.size());
  std::printf("ceiling: raw pg_notify -> LISTEN, %d notifies at 1,000/s from one connection:\n",
              settings.raw_notifies);
  std::printf(
      "         from the send       p50 %.3f ms  p99 %.3f ms  (one NOTIFY commit + "
      "delivery: the least the store's debounced NOTIFY can take)\n",
      bench::Percentile(raw_send, 50), bench::Percentile(raw_send, 99));
  std::printf("         from its return     p50 %.3f ms  p99 %.3f ms  (clamped at 0)\n",
              bench::Percentile(raw_return, 50), bench::Percentile(raw_return, 99));
  std::printf("\ntarget: p99 < 10 ms: %s\n", p99 < 10 ? "met" : "MISSED");
  std::cout << bench::JsonLine("deliver")
                   .Num("p50_ms", p50, 3)
                   .Num("p99_ms", p99, 3)
                   .Num("events", static_cast<double>(lat.ms.size()))
                   .Done()
            << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_deliver: %s\n", e.what());
  return 1;
}
