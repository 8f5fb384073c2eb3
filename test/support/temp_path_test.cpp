// The end-to-end helpers' temporary names carry the pid, and pids come round again: a name a
// dead process left behind (a failing or killed run keeps its files) must not reach a test
// that expects a fresh path. CI once failed this way: TaskRepos re-initialised a leftover
// repository with the same content, and its commit had nothing to commit.

#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>

#include "test/e2e/task_repos.h"

using namespace unidesk::test::e2e;

namespace {

/// The name TempPath hands out `step` calls after `probe`, whose name ends in "-N-probe".
std::string NextName(const std::string& probe, const std::string& what, int step = 1) {
  std::string stem = probe.substr(0, probe.size() - std::string("-probe").size());
  std::size_t dash = stem.rfind('-');
  int n = std::stoi(stem.substr(dash + 1));
  return stem.substr(0, dash + 1) + std::to_string(n + step) + "-" + what;
}

}  // namespace

TEST_CASE("a leftover under this pid's next name is removed before the name is handed out") {
  std::string next = NextName(TempPath("probe"), "stale");
  Sh("mkdir -p " + Quote(next + "/deep") + " && echo old > " + Quote(next + "/deep/file"));
  std::string got = TempPath("stale");
  CHECK(got == next);
  CHECK(!std::filesystem::exists(got));

  std::string file = NextName(TempPath("probe"), "stale-file");
  Sh("echo old > " + Quote(file));
  CHECK(TempPath("stale-file") == file);
  CHECK(!std::filesystem::exists(file));
}

TEST_CASE("repositories made over a dead run's leftovers of the same content still commit") {
  TaskRepos dead;
  // Put copies of them where the next TaskRepos' names will fall, as a dead run with this pid
  // would have left them.
  std::string probe = TempPath("probe");
  Sh("cp -a " + Quote(dead.code) + " " + Quote(NextName(probe, "code", 1)));
  Sh("cp -a " + Quote(dead.env) + " " + Quote(NextName(probe, "env", 2)));
  TaskRepos repos;  // threw "failed: ... git commit" when the leftovers were reused
  CHECK(repos.code == NextName(probe, "code", 1));
  CHECK(repos.env == NextName(probe, "env", 2));
  CHECK(repos.code_commit.size() == 40);
  CHECK(Sh("git -C " + Quote(repos.code) + " rev-list --count HEAD") == "1");
}
