// The agent's pure parts: backoff with full jitter, the on-disk outbox, nvidia-smi parsing,
// the configuration, the log cursor and the attempt records a restarted agent resumes from.

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "provider/agent_config.h"
#include "provider/attempt_record.h"
#include "provider/backoff.h"
#include "provider/log_cursor.h"
#include "provider/machine.h"
#include "provider/outbox.h"

using namespace unidesk::provider;
using std::chrono::milliseconds;

TEST_CASE("backoff: full jitter under an exponential ceiling, capped, reset after a while") {
  Backoff b({milliseconds(1000), milliseconds(60000), milliseconds(60000)}, 42);
  long long max_seen = 0;
  std::set<long long> distinct;
  for (int i = 0; i < 12; ++i) {
    long long d = b.Next().count();
    long long ceiling = std::min(1000LL << i, 60000LL);
    CHECK(d >= 0);
    CHECK(d <= ceiling);
    max_seen = std::max(max_seen, d);
    distinct.insert(d);
  }
  CHECK(max_seen <= 60000);
  CHECK(distinct.size() > 8);  // jittered, not a fixed schedule
  b.SessionEnded(milliseconds(1000));
  CHECK(b.failures() == 12);  // a short session does not reset
  b.SessionEnded(milliseconds(61000));
  CHECK(b.failures() == 0);
  CHECK(b.Next().count() <= 1000);
  CHECK(b.Next(milliseconds(5000)).count() >= 5000);  // Retry-After is a floor
  // A run of 503s (accept ramp-up) does not raise the exponent: the node is not pushed
  // past the cap by the server pacing it.
  int before = b.failures();
  for (int i = 0; i < 20; ++i) {
    long long d = b.Next(milliseconds(3000)).count();
    CHECK(d >= 3000);
    CHECK(d <= 4000);
  }
  CHECK(b.failures() == before);
  CHECK(b.Next(milliseconds(120000)).count() <= 61000);  // an absurd Retry-After is capped
  // Many agents restarting at once spread out.
  std::set<long long> first;
  for (int seed = 0; seed < 100; ++seed) {
    first.insert(Backoff({milliseconds(1000), milliseconds(60000), milliseconds(60000)},
                         static_cast<std::uint64_t>(seed))
                     .Next()
                     .count() /
                 100);
  }
  CHECK(first.size() >= 8);
}

TEST_CASE("outbox: durable, ordered, sequence numbers never reused") {
  char tmpl[] = "/tmp/unidesk-outbox-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string id;
  {
    Outbox o(dir + "/outbox");
    id = o.id();
    CHECK(o.Add("resources", "{\"a\":1}").seq == 1);
    CHECK(o.Add("resources", "{\"a\":2}").seq == 2);
    CHECK(o.Add("resources", "{\"a\":3}").seq == 3);
    o.Ack(2);
  }
  Outbox again(dir + "/outbox");  // a restarted agent
  CHECK(again.id() == id);
  auto pending = again.Pending();
  REQUIRE(pending.size() == 2);
  CHECK(pending[0].seq == 1);
  CHECK(pending[1].seq == 3);
  CHECK(pending[1].body_json == "{\"a\":3}");
  again.Ack(3);
  CHECK(again.Add("resources", "{}").seq == 4);
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE("nvidia-smi output becomes GPUs; unreadable lines are skipped") {
  auto gpus = ParseNvidiaSmi("0, NVIDIA A100-SXM4-40GB, 40960\n1, Tesla T4, 15360\n2, X, [N/A]\n");
  REQUIRE(gpus.size() == 2);
  CHECK(gpus[0].model == "NVIDIA A100-SXM4-40GB");
  CHECK(gpus[1].index == 1);
  CHECK(gpus[1].memory_bytes == 15360LL * 1024 * 1024);
}

namespace {

unidesk::core::Result<AgentConfig, std::string> Config(std::vector<std::string> args) {
  args.insert(args.begin(), {"--server", "ws://127.0.0.1:1", "--name", "n1"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  setenv("UNIDESK_NODE_TOKEN", "udn_test", 1);
  return LoadAgentConfig(static_cast<int>(argv.size()), argv.data());
}

}  // namespace

TEST_CASE("config: host hygiene flags, with defaults and clear errors") {
  auto defaults = Config({});
  REQUIRE(defaults.ok());
  CHECK(defaults.value().hygiene_interval == std::chrono::seconds(60));
  CHECK(defaults.value().hygiene.high_watermark == doctest::Approx(0.85));
  CHECK(defaults.value().hygiene.low_watermark == doctest::Approx(0.70));
  CHECK(defaults.value().hygiene.workspace_ttl_s == 24 * 3600);

  auto set = Config({"--gc-interval", "5m", "--disk-watermarks", "90,60", "--workspace-ttl", "2h"});
  REQUIRE(set.ok());
  CHECK(set.value().hygiene_interval == std::chrono::minutes(5));
  CHECK(set.value().hygiene.high_watermark == doctest::Approx(0.90));
  CHECK(set.value().hygiene.low_watermark == doctest::Approx(0.60));
  CHECK(set.value().hygiene.workspace_ttl_s == 7200);

  for (const char* bad : {"60", "60,90", "90,60,1", "x,y", "101,50", "90,-1"}) {
    CAPTURE(bad);
    auto r = Config({"--disk-watermarks", bad});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().find("--disk-watermarks") != std::string::npos);
  }
  CHECK_FALSE(Config({"--gc-interval", "soon"}).ok());
}

TEST_CASE("config: --on-stop ends tasks by default or keeps them; the build stall limit") {
  auto defaults = Config({});
  REQUIRE(defaults.ok());
  CHECK_FALSE(defaults.value().keep_tasks_on_stop);
  auto keep = Config({"--on-stop", "keep-running"});
  REQUIRE(keep.ok());
  CHECK(keep.value().keep_tasks_on_stop);
  CHECK_FALSE(Config({"--on-stop", "end"}).value().keep_tasks_on_stop);
  CHECK(defaults.value().build_stall_timeout == std::chrono::minutes(30));
  CHECK(Config({"--build-stall-timeout", "90s"}).value().build_stall_timeout ==
        std::chrono::seconds(90));
  CHECK_FALSE(Config({"--build-stall-timeout", "never"}).ok());
  auto bad = Config({"--on-stop", "keep"});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error() == "--on-stop 'keep': expected end or keep-running");
}

TEST_CASE("Docker's log times: parsed to the nanosecond, anything else refused") {
  auto t = ParseDockerTime("2026-11-23T10:11:12.123456789Z");
  REQUIRE(t);
  CHECK(t->seconds == 1795428672);
  CHECK(t->nanos == 123456789);
  auto short_fraction = ParseDockerTime("2026-11-23T10:11:12.5Z");
  REQUIRE(short_fraction);
  CHECK(short_fraction->nanos == 500000000);
  auto whole = ParseDockerTime("1970-01-01T00:00:01Z");
  REQUIRE(whole);
  CHECK(whole->seconds == 1);
  CHECK(whole->nanos == 0);
  for (const char* bad :
       {"", "2026-11-23", "2026-11-23T10:11:12.1234567890Z", "2026-11-23T10:11:12.Z",
        "2026-11-23T10:11:12+08:00", "2026-11-23 10:11:12Z", "2026-11-23T10:11:12.5Zx"}) {
    CAPTURE(bad);
    CHECK_FALSE(ParseDockerTime(bad));
  }
  auto split = SplitTimestamped("2026-11-23T10:11:12.000000001Z hello world\n");
  REQUIRE(split);
  CHECK(split->first == "2026-11-23T10:11:12.000000001Z");
  CHECK(split->second == "hello world\n");
  CHECK_FALSE(SplitTimestamped("hello world"));
  CHECK_FALSE(SplitTimestamped("no-space"));
}

TEST_CASE("log cursor: a restart resumes past what was read, and skips nothing after it") {
  // Times in whole seconds past 10:00:00, as Docker stamps them.
  auto T = [](int s, int ns = 0) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "2026-11-23T10:%02d:%02d.%09dZ", s / 60, s % 60, ns);
    return std::string(buf);
  };
  // What `since` sends again on a resume: the log's entries at or after it, in file order.
  struct Entry {
    std::string at;
    bool err, ends;
  };
  auto Replay = [](const std::vector<Entry>& log, const LogCursor& saved) {
    LogCursor c(saved.since(), saved.skip());
    auto since = ParseDockerTime(saved.since());
    std::vector<std::size_t> fresh;
    for (std::size_t i = 0; i < log.size(); ++i) {
      if (since && *ParseDockerTime(log[i].at) < *since) continue;  // Docker filters these
      if (c.Take(log[i].at, log[i].err, log[i].ends)) fresh.push_back(i);
    }
    return fresh;
  };

  LogCursor fresh;
  CHECK(fresh.since().empty());  // the whole log
  CHECK(fresh.skip() == 0);
  CHECK(fresh.SinceParam().empty());

  // Two stamped alike, then one later: the saved `since` is two seconds before the latest.
  std::vector<Entry> log = {{T(1), false, true}, {T(3), false, true}, {T(3), false, true},
                            {T(4), false, true}, {T(9), false, true}, {T(10), false, true}};
  LogCursor c;
  for (int i = 0; i < 4; ++i) CHECK(c.Take(log[i].at, false, true));
  CHECK(c.since() == T(2));
  CHECK(c.skip() == 3);  // 3, 3 and 4 are at or after it
  CHECK(c.SinceParam() == "1795428002.000000000");
  CHECK(Replay(log, c) == std::vector<std::size_t>{4, 5});  // nothing twice, nothing lost
  // Still replaying, a resumed cursor saves what it was resumed from.
  LogCursor resumed(c.since(), c.skip());
  CHECK_FALSE(resumed.Take(T(3), false, true));
  CHECK(resumed.since() == T(2));
  CHECK(resumed.skip() == 3);

  // A line longer than 16 KiB comes in parts that all carry the first part's time, and the
  // other stream goes on meanwhile: the saved `since` stays at the open line's start.
  std::vector<Entry> split = {{T(5), false, false},  // stdout, first part
                              {T(6), true, true},    // stderr, a whole line
                              {T(9), true, true},    // stderr, later
                              {T(5), false, true}};  // stdout, the line's last part
  LogCursor s;
  for (int i = 0; i < 3; ++i) CHECK(s.Take(split[i].at, split[i].err, split[i].ends));
  CHECK(s.since() == T(5));
  CHECK(s.skip() == 3);
  CHECK(Replay(split, s) == std::vector<std::size_t>{3});
  // Saved before the stderr entries were read: both still come.
  LogCursor s1;
  CHECK(s1.Take(split[0].at, false, false));
  CHECK(Replay(split, s1) == std::vector<std::size_t>{1, 2, 3});

  // stdout and stderr stamped out of order by a little: the margin covers it.
  std::vector<Entry> skew = {{T(7, 500), false, true}, {T(7, 100), true, true}};
  LogCursor k;
  CHECK(k.Take(skew[0].at, false, true));
  CHECK(Replay(skew, k) == std::vector<std::size_t>{1});

  // Resumed twice: the second position counts what the first resume replayed and read.
  LogCursor first;
  for (int i = 0; i < 2; ++i) first.Take(log[i].at, false, true);
  LogCursor second(first.since(), first.skip());
  std::size_t i = 0;
  auto since = ParseDockerTime(first.since());
  for (; i < 5; ++i) {
    if (since && *ParseDockerTime(log[i].at) < *since) continue;
    second.Take(log[i].at, false, true);
  }
  CHECK(Replay(log, second) == std::vector<std::size_t>{5});

  CHECK(c.Take("not a time", false, true));
}

TEST_CASE("attempt records: saved, read back, removed; a broken one is reported and removed") {
  char tmpl[] = "/tmp/unidesk-records-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  AttemptRecords records(dir + "/attempts");
  AttemptRecord r;
  r.assign.task = "5b0e8c1a-2f4d-4c3b-9a7e-1d2c3b4a5f60";
  r.assign.attempt = 2;
  r.assign.spec_json = "{\"command\":[\"true\"]}";
  r.assign.gpu_indices = {0, 3};
  r.container = "abc123";
  r.started_unix_ms = 1795428000123;
  r.log_seq = 7;
  r.log_bytes = 9000;
  r.log_truncated = true;
  r.cursor = LogCursor("2026-11-23T10:00:00.000000002Z", 2);
  REQUIRE(records.Save(r));
  REQUIRE(records.Save(r));  // replaced, not added
  std::system(("echo 'not json' > " + dir + "/attempts/broken.json").c_str());
  std::system(("echo '{}' > " + dir + "/attempts/left.json.tmp").c_str());
  auto loaded = records.LoadAll();
  REQUIRE(loaded.records.size() == 1);
  const AttemptRecord& back = loaded.records[0];
  CHECK(back.assign.task == r.assign.task);
  CHECK(back.assign.attempt == 2);
  CHECK(back.assign.spec_json == r.assign.spec_json);
  CHECK(back.assign.gpu_indices == std::vector<int>{0, 3});
  CHECK(back.container == "abc123");
  CHECK(back.started_unix_ms == 1795428000123);
  CHECK(back.log_seq == 7);
  CHECK(back.log_bytes == 9000);
  CHECK(back.log_truncated);
  CHECK(back.cursor.since() == "2026-11-23T10:00:00.000000002Z");
  CHECK(back.cursor.skip() == 2);
  REQUIRE(loaded.unreadable.size() == 1);
  CHECK(loaded.unreadable[0].find("broken.json") != std::string::npos);
  records.Remove(r.assign.task, 2);
  auto after = records.LoadAll();
  CHECK(after.records.empty());
  CHECK(after.unreadable.empty());  // the broken one and the temporary file went
  CHECK_FALSE(ParseAttemptRecord("{\"container\":\"x\"}").ok());
  std::system(("rm -rf " + dir).c_str());
}
