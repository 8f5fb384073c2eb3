#pragma once
// Shared by the benchmarks: the cluster ops/bench started, fresh databases, timing, percentiles.

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <pqxx/pqxx>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/event_catalogue.h"
#include "core/migrator.h"
#include "ingress/schema_sources.h"
#include "test/support/harness.h"

namespace unidesk::bench {

using Clock = std::chrono::steady_clock;

/// Seconds from `a` to `b`.
inline double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// Milliseconds from `a` to `b`.
inline double Millis(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

/// Conninfo of the cluster ops/bench started ($UNIDESK_BENCH_PG, dbname=postgres).
inline std::string ClusterConninfo() {
  const char* env = std::getenv("UNIDESK_BENCH_PG");
  if (env == nullptr || *env == '\0') {
    throw std::runtime_error("UNIDESK_BENCH_PG is not set: run the benchmark through ops/bench");
  }
  return env;
}

using test::WithDatabase;

/// Drops and creates database `name` in the cluster, migrated to this build's schema.
inline std::string FreshDatabase(const std::string& name) {
  std::string cluster = ClusterConninfo();
  {
    pqxx::connection admin(cluster);
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name));
    tx.exec("CREATE DATABASE " + tx.quote_name(name));
  }
  std::string conninfo = WithDatabase(cluster, name);
  pqxx::connection c(conninfo);
  auto r = core::Migrate(c, ingress::SchemaSources());
  if (!r.ok()) throw std::runtime_error("migrate failed: " + r.error().message);
  return conninfo;
}

/// Runs one statement outside a transaction (CHECKPOINT, VACUUM, DDL).
inline void Exec(const std::string& conninfo, const std::string& sql) {
  pqxx::connection c(conninfo);
  pqxx::nontransaction tx(c);
  tx.exec(sql);
}

/// First column of the first row of `sql`, as a number.
inline long long Scalar(const std::string& conninfo, const std::string& sql) {
  pqxx::connection c(conninfo);
  pqxx::nontransaction tx(c);
  return tx.exec(sql)[0][0].as<long long>();
}

/// The builtin catalogue plus "bench.happened" (v1), the type every benchmark appends.
inline core::EventCatalogue BenchCatalogue() {
  core::EventCatalogue c = core::BuiltinCatalogue();
  c.Declare({"bench.happened", 1, "bench-{n}", "benchmark event", {}});
  return c;
}

/// The p-th percentile (0..100, nearest rank) of `v`; 0 when empty. Sorts `v`.
inline double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

/// Runs a shell command and returns its stdout; throws with the output when it fails.
inline std::string Run(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen((command + " 2>&1").c_str(), "r"), pclose);
  if (!pipe) throw std::runtime_error("cannot run: " + command);
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe.get())) > 0) out.append(buf, n);
  int status = pclose(pipe.release());
  if (status != 0)
    throw std::runtime_error("failed (" + std::to_string(status) + "): " + command + "\n" + out);
  return out;
}

using test::ShellQuote;

/// The whole file, or "" when it cannot be read.
inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// Waits until `child` wrote its port to `ready_file`; throws with its log if it died.
inline unsigned short WaitReady(test::ChildProcess& child, const std::string& ready_file,
                                const std::string& log) {
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    std::string port = ReadFile(ready_file);
    if (!port.empty()) return static_cast<unsigned short>(std::atoi(port.c_str()));
    if (!child.Running()) {
      std::string text = ReadFile(log);
      throw std::runtime_error("the server exited before listening:\n" +
                               text.substr(text.size() > 3000 ? text.size() - 3000 : 0));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("the server did not listen within 60 s");
}

/// "udn_" and 43 base64url characters, the format `unidesk nodes add` issues.
inline std::string NewToken(std::mt19937_64& rng) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string t = "udn_";
  for (int i = 0; i < 43; ++i) t.push_back(kAlphabet[rng() & 63]);
  return t;
}

/// CPU seconds (user + system) of this process (RUSAGE_SELF) or of its ended children
/// (RUSAGE_CHILDREN).
inline double ProcessCpuSeconds(int who = RUSAGE_SELF) {
  rusage u{};
  getrusage(who, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/// One JSON object on one line, built from numbers in the order given.
class JsonLine {
 public:
  explicit JsonLine(const std::string& bench) { out_ = "{\"bench\":\"" + bench + "\""; }
  JsonLine& Num(const std::string& key, double v, int decimals = 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    out_ += ",\"" + key + "\":" + buf;
    return *this;
  }
  std::string Done() const { return out_ + "}"; }

 private:
  std::string out_;
};

}  // namespace unidesk::bench
