// Host hygiene: the pure collection plan (watermarks, least recent use, never what is in use),
// then the real thing on a dockerd of ops/dockerd: workspaces, mirrors and env images left by
// real runs are collected or kept, and orphaned containers are reaped while the agent runs.

#include "provider/host_hygiene.h"

#include <doctest/doctest.h>

#include <filesystem>
#include <mutex>

#include "provider/git_cache.h"
#include "provider/task_manager.h"
#include "provider/task_runner.h"
#include "test/e2e/task_repos.h"
#include "test/support/harness.h"

using namespace unidesk;
using namespace unidesk::provider;
using Kind = CacheItem::Kind;

namespace {

constexpr std::int64_t kGiB = 1LL << 30;
constexpr std::int64_t kNow = 1'800'000'000;

CacheItem Item(Kind kind, const std::string& id, std::int64_t gib, std::int64_t age_s) {
  return {kind, InUseKey(kind, id), id, gib * kGiB, kNow - age_s};
}

std::vector<std::string> Paths(const std::vector<CacheItem>& items) {
  std::vector<std::string> out;
  for (const auto& i : items) out.push_back(i.path);
  return out;
}

HygienePolicy Policy(double high, double low, std::int64_t ttl_s = 24 * 3600) {
  HygienePolicy p;
  p.high_watermark = high;
  p.low_watermark = low;
  p.workspace_ttl_s = ttl_s;
  return p;
}

}  // namespace

TEST_CASE("below the high watermark only expired workspaces go") {
  std::vector<CacheItem> items = {Item(Kind::kWorkspace, "old-ws", 1, 2 * 24 * 3600),
                                  Item(Kind::kWorkspace, "new-ws", 1, 60),
                                  Item(Kind::kImage, "ancient-image", 5, 300 * 24 * 3600)};
  DiskUsage disk{100 * kGiB, 50 * kGiB};  // 50 % used
  CHECK(Paths(PlanCollection(items, {}, disk, Policy(0.85, 0.70), kNow)) ==
        std::vector<std::string>{"old-ws"});
}

TEST_CASE("above the high watermark the least recently used go until the low one is reached") {
  std::vector<CacheItem> items = {
      Item(Kind::kImage, "image-a", 5, 10 * 3600), Item(Kind::kMirror, "mirror-b", 5, 20 * 3600),
      Item(Kind::kImage, "image-c", 10, 30 * 3600), Item(Kind::kWorkspace, "ws-d", 5, 3600)};
  DiskUsage disk{100 * kGiB, 9 * kGiB};  // 91 % used: 81, 76, 71, then 66 %
  CHECK(Paths(PlanCollection(items, {}, disk, Policy(0.85, 0.70), kNow)) ==
        std::vector<std::string>{"image-c", "mirror-b", "image-a", "ws-d"});
  disk.free_bytes = 20 * kGiB;  // 80 %: under the high watermark, nothing needed
  CHECK(PlanCollection(items, {}, disk, Policy(0.85, 0.70), kNow).empty());
  disk.free_bytes = 13 * kGiB;  // 87 %: 77, 72, then 67 %, and the newest stays
  CHECK(Paths(PlanCollection(items, {}, disk, Policy(0.85, 0.70), kNow)) ==
        std::vector<std::string>{"image-c", "mirror-b", "image-a"});
}

TEST_CASE("what a running attempt needs is never collected, however full the disk") {
  std::vector<CacheItem> items = {Item(Kind::kImage, "image-a", 5, 100 * 24 * 3600),
                                  Item(Kind::kMirror, "mirror-b", 5, 100 * 24 * 3600),
                                  Item(Kind::kWorkspace, "ws-c", 5, 100 * 24 * 3600),
                                  Item(Kind::kImage, "image-d", 5, 3600)};
  std::set<std::string> in_use = {InUseKey(Kind::kImage, "image-a"),
                                  InUseKey(Kind::kMirror, "mirror-b"),
                                  InUseKey(Kind::kWorkspace, "ws-c")};
  DiskUsage disk{100 * kGiB, 1 * kGiB};
  CHECK(Paths(PlanCollection(items, in_use, disk, Policy(0.85, 0.70), kNow)) ==
        std::vector<std::string>{"image-d"});
}

TEST_CASE("on a tie of last use the cheapest to get back goes first") {
  std::vector<CacheItem> items = {Item(Kind::kImage, "image", 1, 3600),
                                  Item(Kind::kMirror, "mirror", 1, 3600),
                                  Item(Kind::kWorkspace, "ws", 1, 3600)};
  DiskUsage disk{10 * kGiB, 0};
  CHECK(Paths(PlanCollection(items, {}, disk, Policy(0.5, 0.0), kNow)) ==
        std::vector<std::string>{"ws", "mirror", "image"});
}

TEST_CASE("an unknown disk size collects expired workspaces only") {
  std::vector<CacheItem> items = {Item(Kind::kWorkspace, "old", 1, 3 * 24 * 3600),
                                  Item(Kind::kImage, "image", 1, 3 * 24 * 3600)};
  CHECK(Paths(PlanCollection(items, {}, DiskUsage{}, Policy(0.0, 0.0), kNow)) ==
        std::vector<std::string>{"old"});
}

TEST_CASE("on a real engine: what runs left is collected, what a running attempt needs is kept") {
  namespace fs = std::filesystem;
  test::e2e::Dockerd docker;
  test::e2e::TaskRepos repos;
  std::string data = test::e2e::TempPath("hygiene-data");
  RunnerSettings s;
  s.node = "hyg";
  s.data_dir = data;
  s.docker_socket = docker.socket;
  s.git = test::GitFetch();
  Assignment a = repos.Assignment("task-one");
  RunOutcome o = TaskRunner(s).Run(a, {});
  REQUIRE(o.state == "succeeded");
  std::string image = o.image;
  // A second environment nobody uses any more, and a workspace from two days ago.
  docker.Docker("tag " + image + " unidesk-env/stale:1");
  REQUIRE(docker.Docker("image ls -q unidesk-env/stale:1") != "");
  std::string old_ws = data + "/work/old-task-1";
  fs::create_directories(old_ws + "/workspace");
  fs::last_write_time(old_ws, fs::file_time_type::clock::now() - std::chrono::hours(48));

  GitCache git(data);
  std::string mirror = git.MirrorPath(a.spec.code_repo_url);
  REQUIRE(fs::is_directory(mirror));
  HostHygiene hygiene(data, docker.socket, HygienePolicy{}, core::MakeLogger("hygiene"));
  auto items = hygiene.Inventory();
  std::set<std::string> kinds;
  for (const auto& i : items) kinds.insert(i.key.substr(0, i.key.find(':')));
  CHECK(kinds == std::set<std::string>{"image", "mirror", "workspace"});

  SUBCASE("the disk below its high watermark: only the expired workspace goes") {
    CollectionReport r = hygiene.Collect({});
    CHECK(r.failures.empty());
    CHECK(r.removed == 1);
    CHECK_FALSE(fs::exists(old_ws));
    CHECK(fs::is_directory(mirror));
    CHECK(fs::is_directory(git.MirrorPath(a.spec.env_repo_url)));
    CHECK(docker.Docker("image ls -q " + image) != "");
    CHECK(docker.Docker("image ls -q unidesk-env/stale:1") != "");
  }
  SUBCASE("a full disk (watermarks at 0 %): everything goes but what runs") {
    HygienePolicy full;
    full.high_watermark = 0.0;
    full.low_watermark = 0.0;
    HostHygiene strict(data, docker.socket, full, core::MakeLogger("hygiene"));
    // The attempt "running" now needs the code mirror and the image.
    std::set<std::string> in_use = {InUseKey(Kind::kMirror, mirror), InUseKey(Kind::kImage, image)};
    CollectionReport r = strict.Collect(in_use);
    CHECK(r.failures.empty());
    CHECK(fs::is_directory(mirror));
    CHECK_FALSE(fs::exists(git.MirrorPath(a.spec.env_repo_url)));
    CHECK_FALSE(fs::exists(old_ws));
    CHECK(docker.Docker("image ls -q " + image) != "");
    CHECK(docker.Docker("image ls -q unidesk-env/stale:1") == "");
    // The next run of the same pins finds the image (no build) and refetches nothing.
    a.task_id = "task-two";
    RunOutcome again = TaskRunner(s).Run(a, {});
    CHECK(again.state == "succeeded");
    CHECK_FALSE(again.image_built);
    CHECK_FALSE(again.code_fetched);
  }
}

TEST_CASE("on a real engine: orphaned containers are reaped; only an unreported attempt is lost") {
  test::e2e::Dockerd docker;
  test::e2e::TaskRepos repos;
  // An image to create containers from (built by a real run).
  RunnerSettings s;
  s.node = "reaper";
  s.data_dir = test::e2e::TempPath("reaper-data");
  s.docker_socket = docker.socket;
  s.git = test::GitFetch();
  Assignment a = repos.Assignment("build-only");
  RunOutcome o = TaskRunner(s).Run(a, {});
  REQUIRE(o.state == "succeeded");
  auto orphan = [&](const std::string& task) {
    return docker.Docker("create --label unidesk.node=reaper --label unidesk.task=" + task +
                         " --label unidesk.attempt=1 " + o.image + " true");
  };
  std::string ended = orphan("ended-task");
  std::string unreported = orphan("unreported-task");
  std::string other_node =
      docker.Docker("create --label unidesk.node=someone-else " + o.image + " true");
  REQUIRE(!ended.empty());
  REQUIRE(!unreported.empty());

  std::mutex mu;
  std::vector<std::string> reports;
  TaskManager tasks(
      s,
      [&](const std::string& kind, const std::string& body) {
        std::lock_guard<std::mutex> lock(mu);
        if (kind == "task") reports.push_back(body);
      },
      core::MakeLogger("tasks"));
  tasks.MarkEnded("ended-task", 1);  // its ending was reported before
  tasks.ReapOrphans();
  auto exists = [&](const std::string& id) {
    return docker.Docker("ps -aq --no-trunc --filter id=" + id) != "";
  };
  CHECK_FALSE(exists(ended));
  CHECK_FALSE(exists(unreported));
  CHECK(exists(other_node));  // another agent's container is not this one's business
  std::lock_guard<std::mutex> lock(mu);
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].find("unreported-task") != std::string::npos);
  CHECK(reports[0].find("\"lost\"") != std::string::npos);
}
