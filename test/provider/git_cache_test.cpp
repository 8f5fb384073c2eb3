// The node's git cache against real repositories made with the git CLI, reached over file://.

#include "provider/git_cache.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "test/e2e/silent_server.h"
#include "test/support/harness.h"

using namespace unidesk::provider;
namespace fs = std::filesystem;
using Files = std::map<std::string, std::string>;  // relative path -> content

namespace {

std::string Run(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[256];
  while (fgets(buf, sizeof buf, p) != nullptr) out += buf;
  int rc = pclose(p);
  INFO(cmd << "\n" << out);
  REQUIRE(rc == 0);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

Files ReadTree(const std::string& dir) {
  Files files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path());
    std::stringstream ss;
    ss << in.rdbuf();
    files[fs::relative(e.path(), dir).string()] = ss.str();
  }
  return files;
}

// A temp dir with an origin repository (committed to directly) and a node data dir.
struct Origin {
  std::string root;
  std::string repo;
  std::string url;
  std::string data;

  Origin() {
    char tmpl[] = "/tmp/unidesk-gitcache-XXXXXX";
    root = mkdtemp(tmpl);
    repo = root + "/origin";
    url = "file://" + repo;
    data = root + "/data";
    Run("git -c init.defaultBranch=main init -q " + repo);
  }
  ~Origin() { fs::remove_all(root); }

  // Writes `files` (and removes `gone`) in the origin, commits, and returns the commit id.
  std::string Commit(const Files& files, const std::vector<std::string>& gone = {}) {
    for (const auto& [path, content] : files) {
      fs::create_directories(fs::path(repo + "/" + path).parent_path());
      std::ofstream(repo + "/" + path) << content;
    }
    for (const auto& path : gone) fs::remove(repo + "/" + path);
    Run("git -C " + repo + " add -A");
    Run("git -C " + repo +
        " -c user.name=t -c user.email=t@t -c commit.gpgsign=false commit -q -m change");
    return Run("git -C " + repo + " rev-parse HEAD");
  }

  std::string Workspace(const std::string& name) const { return root + "/ws-" + name; }
};

/// Runs `prepare` with a deadline. A fetch that cannot be stopped would otherwise hang the test
/// until CTest's timeout, so a miss ends the process at once, saying why.
PrepareResult WithDeadline(std::function<PrepareResult()> prepare, std::chrono::seconds limit) {
  auto done = std::make_shared<std::promise<PrepareResult>>();
  auto result = done->get_future();
  std::thread([done, prepare] { done->set_value(prepare()); }).detach();
  if (result.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "FAILED: the fetch was still running after %lld s\n",
                 static_cast<long long>(limit.count()));
    std::_Exit(1);
  }
  return result.get();
}

const std::string kSomeCommit = "0123456789abcdef0123456789abcdef01234567";

}  // namespace

TEST_CASE("git cache: first Prepare creates the mirror; the second one does not fetch") {
  Origin o;
  std::string a =
      o.Commit({{"a.txt", "alpha\n"}, {"sub/b.txt", "beta\n"}, {"run.sh", "#!/bin/sh\n"}});
  Run("chmod +x " + o.repo + "/run.sh");
  std::string a2 = o.Commit({});
  CHECK(a2 != a);  // the mode change is a commit of its own
  o.Commit({{"later.txt", "not in a2\n"}});
  GitCache cache(o.data, unidesk::test::GitFetch());

  auto first = cache.Prepare(o.url, a2, o.Workspace("1"));
  REQUIRE_MESSAGE(first.ok(), first.error().message);
  CHECK(first.value().fetched);
  CHECK(first.value().mirror_created);
  CHECK(first.value().total_ms >= first.value().checkout_ms);
  const std::string mirror = cache.MirrorPath(o.url);
  CHECK(fs::path(mirror).parent_path() == fs::path(o.data + "/git/mirrors"));
  CHECK(fs::path(mirror).extension() == ".git");
  CHECK(fs::path(mirror).stem().string().size() == 64);  // sha256 of the URL
  CHECK(Run("git --git-dir=" + mirror + " rev-parse --is-bare-repository") == "true");
  CHECK(ReadTree(o.Workspace("1")) ==
        Files{{"a.txt", "alpha\n"}, {"sub/b.txt", "beta\n"}, {"run.sh", "#!/bin/sh\n"}});
  CHECK((fs::status(o.Workspace("1") + "/run.sh").permissions() & fs::perms::owner_exec) !=
        fs::perms::none);
  CHECK(!fs::exists(o.Workspace("1") + "/.git"));
  CHECK(!fs::exists(mirror + "/index"));  // checkouts write nothing shared into the mirror

  auto second = cache.Prepare(o.url, a, o.Workspace("2"));
  REQUIRE_MESSAGE(second.ok(), second.error().message);
  CHECK(!second.value().fetched);
  CHECK(!second.value().mirror_created);
  CHECK(second.value().fetch_ms == 0);
  CHECK(ReadTree(o.Workspace("2")).count("later.txt") == 0);
  CHECK((fs::status(o.Workspace("2") + "/run.sh").permissions() & fs::perms::owner_exec) ==
        fs::perms::none);  // exactly commit a, before the chmod
}

TEST_CASE("git cache: a commit made after the mirror exists is fetched incrementally") {
  Origin o;
  std::string a = o.Commit({{"a.txt", "one\n"}, {"old.txt", "old\n"}});
  GitCache cache(o.data, unidesk::test::GitFetch());
  auto first = cache.Prepare(o.url, a, o.Workspace("a"));
  REQUIRE_MESSAGE(first.ok(), first.error().message);

  Run("git -C " + o.repo + " checkout -q -b feature");
  std::string b = o.Commit({{"a.txt", "two\n"}, {"c/new.txt", "new\n"}}, {"old.txt"});
  // A ref lock left by a fetch that was killed midway must not block the next fetch.
  std::ofstream(cache.MirrorPath(o.url) + "/refs/heads/feature.lock") << "stale";
  const std::string partial_pack = cache.MirrorPath(o.url) + "/objects/pack/tmp_pack_Ab12Cd";
  std::ofstream(partial_pack) << "half a pack";  // ... and the pack it was receiving
  auto got = cache.Prepare(o.url, b, o.Workspace("b"));
  REQUIRE_MESSAGE(got.ok(), got.error().message);
  CHECK(!fs::exists(partial_pack));
  CHECK(got.value().fetched);
  CHECK(!got.value().mirror_created);
  CHECK(ReadTree(o.Workspace("b")) == Files{{"a.txt", "two\n"}, {"c/new.txt", "new\n"}});
  CHECK(Run("git --git-dir=" + cache.MirrorPath(o.url) + " rev-parse refs/heads/feature") == b);

  auto again = cache.Prepare(o.url, a, o.Workspace("a-again"));
  REQUIRE(again.ok());
  CHECK(!again.value().fetched);
  CHECK(ReadTree(o.Workspace("a-again")) == Files{{"a.txt", "one\n"}, {"old.txt", "old\n"}});
}

TEST_CASE("git cache: unknown commits, unreachable repositories and bad ids are typed errors") {
  Origin o;
  o.Commit({{"a.txt", "a\n"}});
  GitCache cache(o.data, unidesk::test::GitFetch());
  const std::string missing = "0123456789abcdef0123456789abcdef01234567";

  auto r = cache.Prepare(o.url, missing, o.Workspace("1"));
  REQUIRE(!r.ok());
  CHECK(r.error().code == GitError::kCommitNotFound);
  CHECK(r.error().message.find(missing) != std::string::npos);
  CHECK(r.error().message.find(o.url) != std::string::npos);
  MESSAGE(r.error().message);

  const std::string nowhere = "file://" + o.root + "/no-such-repo";
  auto gone = cache.Prepare(nowhere, missing, o.Workspace("2"));
  REQUIRE(!gone.ok());
  CHECK(gone.error().code == GitError::kFetchFailed);
  CHECK(gone.error().message.find(nowhere) != std::string::npos);
  MESSAGE(gone.error().message);
  CHECK(!fs::exists(cache.MirrorPath(nowhere)));
  CHECK(!fs::exists(cache.MirrorPath(nowhere) + ".tmp"));

  auto bad = cache.Prepare(o.url, "HEAD", o.Workspace("3"));
  REQUIRE(!bad.ok());
  CHECK(bad.error().code == GitError::kInvalidCommitId);
  auto bad_hex = cache.Prepare(o.url, std::string(40, 'g'), o.Workspace("3"));
  REQUIRE(!bad_hex.ok());
  CHECK(bad_hex.error().code == GitError::kInvalidCommitId);
}

TEST_CASE("git cache: concurrent Prepares of one repository share one valid mirror") {
  Origin o;
  Files files;
  for (int i = 0; i < 200; ++i) files["f/" + std::to_string(i) + ".txt"] = std::to_string(i * i);
  std::string a = o.Commit(files);
  GitCache cache(o.data, unidesk::test::GitFetch());

  constexpr int kThreads = 4;
  std::vector<std::optional<PrepareResult>> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back(
        [&, i] { results[i].emplace(cache.Prepare(o.url, a, o.Workspace(std::to_string(i)))); });
  }
  for (auto& t : threads) t.join();
  int fetched = 0;
  int created = 0;
  for (int i = 0; i < kThreads; ++i) {
    REQUIRE_MESSAGE(results[i]->ok(), results[i]->error().message);
    fetched += results[i]->value().fetched;
    created += results[i]->value().mirror_created;
    CHECK(ReadTree(o.Workspace(std::to_string(i))) == files);
  }
  CHECK(fetched == 1);
  CHECK(created == 1);
  Run("git --git-dir=" + cache.MirrorPath(o.url) + " fsck --no-progress");
  auto third = cache.Prepare(o.url, a, o.Workspace("after"));
  REQUIRE(third.ok());
  CHECK(!third.value().fetched);
}

TEST_CASE("git cache: a held mirror lock is waited for; one left by a killed process is not") {
  Origin o;
  std::string a = o.Commit({{"a.txt", "a\n"}});
  GitCache cache(o.data, unidesk::test::GitFetch());
  const std::string lock = cache.MirrorPath(o.url) + ".lock";
  fs::create_directories(fs::path(lock).parent_path());

  int ready[2];
  REQUIRE(pipe(ready) == 0);
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // only async-signal-safe calls from here on
    int fd = open(lock.c_str(), O_RDWR | O_CREAT, 0644);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) _exit(1);
    char c = 'x';
    if (write(ready[1], &c, 1) != 1) _exit(1);
    for (;;) pause();
  }
  char c = 0;
  REQUIRE(read(ready[0], &c, 1) == 1);
  close(ready[0]);
  close(ready[1]);

  const auto start = std::chrono::steady_clock::now();
  auto give_up = [&] {
    return std::chrono::steady_clock::now() - start > std::chrono::milliseconds(300);
  };
  auto blocked = cache.Prepare(o.url, a, o.Workspace("blocked"), give_up);
  REQUIRE(!blocked.ok());
  CHECK(blocked.error().code == GitError::kCancelled);  // it really waited for the holder

  REQUIRE(kill(child, SIGKILL) == 0);
  REQUIRE(waitpid(child, nullptr, 0) == child);
  CHECK(fs::exists(lock));  // the file stays; the lock died with its holder
  auto r = cache.Prepare(o.url, a, o.Workspace("after"));
  REQUIRE_MESSAGE(r.ok(), r.error().message);
  CHECK(r.value().mirror_created);
  CHECK(ReadTree(o.Workspace("after")) == Files{{"a.txt", "a\n"}});
}

TEST_CASE("git cache: the cancel hook stops a fetch and leaves no half-made mirror") {
  Origin o;
  std::string a = o.Commit({{"a.txt", "a\n"}});
  GitCache cache(o.data, unidesk::test::GitFetch());

  auto at_once = cache.Prepare(o.url, a, o.Workspace("1"), [] { return true; });
  REQUIRE(!at_once.ok());
  CHECK(at_once.error().code == GitError::kCancelled);

  // False on the check before the fetch, true from inside libgit2's progress callbacks.
  int calls = 0;
  auto midway = cache.Prepare(o.url, a, o.Workspace("2"), [&] { return calls++ >= 1; });
  REQUIRE(!midway.ok());
  CHECK(midway.error().code == GitError::kCancelled);
  CHECK(calls >= 2);
  CHECK(!fs::exists(cache.MirrorPath(o.url)));
  CHECK(!fs::exists(cache.MirrorPath(o.url) + ".tmp"));

  auto r = cache.Prepare(o.url, a, o.Workspace("3"), [] { return false; });
  REQUIRE_MESSAGE(r.ok(), r.error().message);
  CHECK(r.value().mirror_created);
}

TEST_CASE("git cache: a fetch from a server that never answers is cancelled or times out") {
  Origin o;
  unidesk::test::e2e::SilentServer server;
  using std::chrono::steady_clock;

  SUBCASE("cancel stops it, and no half-made mirror is left") {
    GitCache cache(o.data, unidesk::test::GitFetch());
    auto start = steady_clock::now();
    // Once the fetch waits on the server (however long the child took to start).
    auto cancel_soon = [&] { return server.accepted >= 1; };
    PrepareResult r = WithDeadline(
        [&] {
          return cache.Prepare(server.Url("code.git", "http"), kSomeCommit, o.Workspace("c"),
                               cancel_soon);
        },
        std::chrono::seconds(20));
    REQUIRE(!r.ok());
    CHECK(r.error().code == GitError::kCancelled);
    CHECK(steady_clock::now() - start < std::chrono::seconds(10));
    CHECK(!fs::exists(cache.MirrorPath(server.Url("code.git", "http"))));
    CHECK(!fs::exists(cache.MirrorPath(server.Url("code.git", "http")) + ".tmp"));
  }
  SUBCASE("silence past the stall limit fails it, naming the limit") {
    GitCache cache(o.data, unidesk::test::GitFetch(std::chrono::seconds(1)));
    auto start = steady_clock::now();
    PrepareResult r = WithDeadline(
        [&] {
          return cache.Prepare(server.Url("code.git", "http"), kSomeCommit, o.Workspace("s"));
        },
        std::chrono::seconds(20));
    REQUIRE(!r.ok());
    CHECK(r.error().code == GitError::kFetchFailed);
    INFO(r.error().message);
    CHECK(r.error().message.find("no progress for 1 s") != std::string::npos);
    CHECK(r.error().message.find(server.Url("code.git", "http")) != std::string::npos);
    CHECK(steady_clock::now() - start >= std::chrono::seconds(1));
    CHECK(steady_clock::now() - start < std::chrono::seconds(8));
    CHECK(!fs::exists(cache.MirrorPath(server.Url("code.git", "http")) + ".tmp"));
  }
}

TEST_CASE("git cache: a fetch reports its progress; without a fetch helper it fails saying so") {
  Origin o;
  std::string a = o.Commit({{"a.txt", "a\n"}});
  {
    GitCache unconfigured(o.data);
    auto r = unconfigured.Prepare(o.url, a, o.Workspace("none"));
    REQUIRE(!r.ok());
    CHECK(r.error().code == GitError::kFetchFailed);
    CHECK(r.error().message.find("no fetch helper") != std::string::npos);
  }
  {
    GitCache wrong(o.data, {o.root + "/no-such-binary", std::chrono::seconds(5)});
    auto r = wrong.Prepare(o.url, a, o.Workspace("wrong"));
    REQUIRE(!r.ok());
    CHECK(r.error().code == GitError::kFetchFailed);
    INFO(r.error().message);
    CHECK(r.error().message.find("no-such-binary") != std::string::npos);
  }
  GitCache cache(o.data, unidesk::test::GitFetch());
  std::vector<std::string> lines;
  auto r = cache.Prepare(o.url, a, o.Workspace("p"), {},
                         [&](const std::string& line) { lines.push_back(line); });
  REQUIRE_MESSAGE(r.ok(), r.error().message);
  REQUIRE(!lines.empty());
  CHECK(lines.back().rfind("fetched 3 objects", 0) == 0);  // commit, tree, blob
  CHECK(ReadTree(o.Workspace("p")) == Files{{"a.txt", "a\n"}});
}
