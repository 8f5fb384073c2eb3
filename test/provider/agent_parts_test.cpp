// The agent's pure parts: backoff with full jitter, the on-disk outbox, nvidia-smi parsing,
// the configuration.

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "provider/agent_config.h"
#include "provider/backoff.h"
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
