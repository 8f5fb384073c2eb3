// One task attempt on a node, for real: git repositories made by the test (file://), the env
// image built from scratch (Debian's static busybox; no registry here) on a dockerd started by
// ops/dockerd, the code mounted at /workspace. The second run of the same pins fetches nothing
// and builds nothing (from the runner's outcome and the Docker API, not from timing). Then the
// faults a task can meet, each ending in the class and reason a person would expect.

#include "provider/task_runner.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "provider/docker_client.h"
#include "test/e2e/task_repos.h"
#include "test/support/harness.h"

using namespace unidesk;
using namespace unidesk::provider;
using unidesk::test::e2e::Commit;
using unidesk::test::e2e::Sh;

namespace {

std::string Temp(const std::string& what) {
  // TempPath: a dead process's leftover under the same name is removed first, and a passing
  // run removes its own (test_main.cpp).
  std::string p = test::e2e::TempPath(what);
  test::Shell("mkdir -p " + test::ShellQuote(p));
  return p;
}

std::string NewRepo() {
  std::string r = Temp("repo");
  Sh("git init -q " + test::ShellQuote(r));
  return r;
}

struct Fixture {
  std::string dockerd = Temp("dockerd");
  std::string socket;
  std::string code = NewRepo();
  std::string env = NewRepo();
  std::string code_commit, env_commit, bad_env_commit;
  Fixture() {
    if (test::Shell(std::string(UNIDESK_SOURCE_DIR) + "/ops/dockerd start " +
                    test::ShellQuote(dockerd)) != 0) {
      throw std::runtime_error("ops/dockerd start failed");
    }
    socket = dockerd + "/docker.sock";
    code_commit = Commit(code, {{"msg.txt", "pinned code\n"},
                                {"run.sh", "echo hello from $(cat msg.txt); echo oops >&2\n"}});
    env_commit = Commit(env,
                        {{"docker/Dockerfile",
                          "FROM scratch\nCOPY busybox /bin/busybox\n"
                          "RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"
                          "ENV PATH=/bin\n"}},
                        "cp /bin/busybox busybox");
    bad_env_commit = Commit(env, {{"docker/Dockerfile",
                                   "FROM scratch\nCOPY busybox /bin/busybox\n"
                                   "RUN [\"/bin/busybox\", \"false\"]\n"}});
  }
  ~Fixture() {
    test::Shell(std::string(UNIDESK_SOURCE_DIR) + "/ops/dockerd stop " + test::ShellQuote(dockerd));
    test::Shell("rm -rf " + test::ShellQuote(dockerd));
  }
  Assignment Task(const std::string& id, std::vector<std::string> command) const {
    Assignment a;
    a.task_id = id;
    a.spec.code_repo_url = "file://" + code;
    a.spec.code_commit_id = code_commit;
    a.spec.env_repo_url = "file://" + env;
    a.spec.env_commit_id = env_commit;
    a.spec.dockerfile_path = "docker/Dockerfile";
    a.spec.command = std::move(command);
    a.spec.resources.cpu_millis = 500;
    a.spec.resources.memory_bytes = 64LL << 20;
    a.spec.timeout_s = 60;
    return a;
  }
};

Fixture& F() {
  static Fixture f;
  return f;
}

struct Run {
  RunOutcome outcome;
  std::string out, err;
  std::vector<std::string> phases;
};

Run Execute(const Assignment& a, const std::string& data_dir, std::function<bool()> cancelled = {},
            const std::string& socket = "") {
  RunnerSettings s;
  s.data_dir = data_dir;
  s.docker_socket = socket.empty() ? F().socket : socket;
  s.git = test::GitFetch();
  s.stop_grace_s = 1;
  Run r;
  RunnerHooks hooks;
  hooks.on_phase = [&](const std::string& p, const RunOutcome&) { r.phases.push_back(p); };
  hooks.on_log = [&](bool e, std::string_view v) { (e ? r.err : r.out).append(v); };
  hooks.cancelled = std::move(cancelled);
  r.outcome = TaskRunner(s).Run(a, hooks);
  return r;
}

// The task's own output: without the fetch's and the build's lines, which appear when this run
// fetched or built (it is the first to need it, e.g. when the test case that builds it runs
// alone or failed).
std::string RunOutput(const std::string& log) {
  std::string out;
  size_t at = 0;
  while (at < log.size()) {
    size_t end = log.find('\n', at);
    end = end == std::string::npos ? log.size() : end + 1;
    if (log.compare(at, 8, "[build] ") != 0 && log.compare(at, 6, "[git] ") != 0) {
      out.append(log, at, end - at);
    }
    at = end;
  }
  return out;
}

}  // namespace

TEST_CASE("a task runs at its pinned commits; the second run fetches and builds nothing") {
  std::string data = Temp("node");
  Run first = Execute(F().Task("t-first", {"sh", "run.sh"}), data);
  REQUIRE_MESSAGE(first.outcome.state == "succeeded", first.outcome.reason << "\n" << first.out);
  CHECK(first.outcome.exit_code == 0);
  CHECK(first.out.find("hello from pinned code") != std::string::npos);
  CHECK(first.out.find("[build] Step 1/") != std::string::npos);  // build output is task log
  CHECK(first.err == "oops\n");
  CHECK(first.phases == std::vector<std::string>{"git", "build", "running"});
  CHECK(first.outcome.code_fetched);
  CHECK(first.outcome.env_fetched);
  CHECK(first.outcome.image_built);
  CHECK(DockerClient(F().socket).ImageExists(first.outcome.image).value());

  // The code repository moves on; the task is pinned, so it still sees its commit.
  Commit(F().code, {{"msg.txt", "newer code\n"}});
  Run second = Execute(F().Task("t-second", {"sh", "run.sh"}), data);
  REQUIRE_MESSAGE(second.outcome.state == "succeeded", second.outcome.reason);
  CHECK(second.out.find("hello from pinned code") != std::string::npos);
  CHECK(second.phases == std::vector<std::string>{"git", "running"});
  CHECK_FALSE(second.outcome.code_fetched);  // the mirror had the commit: no network
  CHECK_FALSE(second.outcome.env_fetched);
  CHECK_FALSE(second.outcome.image_built);  // reused by tag
  CHECK(second.outcome.image == first.outcome.image);
  CHECK(second.out.find("[build]") == std::string::npos);
  MESSAGE("prepare (git + image + create + start): first "
          << first.outcome.prepare_ms << " ms, cached " << second.outcome.prepare_ms << " ms");
  CHECK(second.outcome.prepare_ms < 1000);
  // No container is left behind.
  CHECK(DockerClient(F().socket).ListByLabel("unidesk.task").value().empty());
}

TEST_CASE("faults end with the class and reason a person would expect") {
  std::string data = Temp("node");
  SUBCASE("non-zero exit") {
    Run r = Execute(F().Task("t-exit", {"sh", "-c", "echo partial; exit 3"}), data);
    CHECK(r.outcome.state == "failed");
    CHECK(r.outcome.failure == FailureClass::kExit);
    CHECK(r.outcome.exit_code == 3);
    CHECK(RunOutput(r.out) == "partial\n");
  }
  SUBCASE("a GPU that fails its health check: the node's fault, before any work") {
    // nvidia-smi as it answers for a GPU fallen off the bus (no GPU here: a stand-in script).
    std::string smi = test::e2e::TempPath("nvidia-smi");
    {
      std::ofstream f(smi);
      f << "#!/bin/sh\necho 'Unable to determine the device handle for GPU0000:3B:00.0: GPU "
           "is lost.'\nexit 15\n";
    }
    REQUIRE(chmod(smi.c_str(), 0755) == 0);
    Assignment a = F().Task("t-gpu-lost", {"true"});
    a.gpu_indices = {0};
    RunnerSettings s;
    s.data_dir = data;
    s.docker_socket = F().socket;
    s.git = test::GitFetch();
    s.nvidia_smi = smi;
    std::vector<std::string> phases;
    RunnerHooks h;
    h.on_phase = [&](const std::string& p, const RunOutcome&) { phases.push_back(p); };
    RunOutcome o = TaskRunner(s).Run(a, h);
    CHECK(o.state == "failed");
    CHECK(o.failure == FailureClass::kRuntime);
    CHECK(o.reason ==
          "GPU health check: nvidia-smi failed: Unable to determine the device handle for "
          "GPU0000:3B:00.0: GPU is lost.");
    CHECK(phases.empty());  // no fetch, no build, no container

    // GPUs that pass the check but that this engine cannot give a container (no NVIDIA
    // toolkit here): also the node's fault, in Docker's words.
    s.nvidia_smi.clear();
    o = TaskRunner(s).Run(a, h);
    CHECK(o.state == "failed");
    CHECK(o.failure == FailureClass::kRuntime);
    CHECK(o.reason.find("could not select device driver") != std::string::npos);
  }
  SUBCASE("past its memory limit: killed, and the reason says so") {
    // 64 MiB limit; the shell holds 128 MiB of text.
    Run r = Execute(F().Task("t-oom", {"sh", "-c",
                                       "x=$(head -c 134217728 /dev/zero | tr '\\0' a); "
                                       "echo survived ${#x}"}),
                    data);
    CHECK(r.outcome.state == "failed");
    CHECK(r.outcome.failure == FailureClass::kExit);
    CHECK(r.outcome.reason ==
          "killed for running out of memory: it used its whole limit of 64 MiB "
          "(resources.memory_mb)");
    CHECK(r.out.find("survived") == std::string::npos);
  }
  SUBCASE("a command that is not in the image") {
    Run r = Execute(F().Task("t-nocmd", {"train-model", "--fast"}), data);
    CHECK(r.outcome.state == "failed");
    CHECK(r.outcome.failure == FailureClass::kStart);
    CHECK(r.outcome.reason.find("train-model") != std::string::npos);
  }
  SUBCASE("past its timeout") {
    Assignment a = F().Task("t-timeout", {"sleep", "30"});
    a.spec.timeout_s = 1;
    auto t0 = std::chrono::steady_clock::now();
    Run r = Execute(a, data);
    CHECK(r.outcome.state == "timed_out");
    CHECK(r.outcome.failure == FailureClass::kTimeout);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(15));
  }
  SUBCASE("cancel while running") {
    std::atomic<bool> cancel{false};
    auto t0 = std::chrono::steady_clock::now();
    std::thread canceller([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      cancel = true;
    });
    Run r = Execute(F().Task("t-cancel", {"sleep", "30"}), data, [&] { return cancel.load(); });
    canceller.join();
    CHECK(r.outcome.state == "cancelled");
    CHECK(r.outcome.failure == FailureClass::kCancelled);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(15));
  }
  SUBCASE("cancel during git fetch") {
    Run r = Execute(F().Task("t-cancel-git", {"true"}), Temp("fresh-node"), [] { return true; });
    CHECK(r.outcome.state == "cancelled");
    CHECK(r.outcome.failure == FailureClass::kCancelled);
  }
  SUBCASE("cancel during the build") {
    Assignment a = F().Task("t-cancel-build", {"true"});
    a.spec.env_commit_id = Commit(F().env, {{"slow/Dockerfile",
                                             "FROM scratch\nCOPY busybox /bin/busybox\n"
                                             "RUN [\"/bin/busybox\", \"sleep\", \"30\"]\n"}});
    a.spec.dockerfile_path = "slow/Dockerfile";
    std::atomic<bool> building{false};
    auto t0 = std::chrono::steady_clock::now();
    RunnerSettings s;
    s.data_dir = data;
    s.docker_socket = F().socket;
    s.git = test::GitFetch();
    RunnerHooks h;
    h.on_phase = [&](const std::string& p, const RunOutcome&) {
      building = building || p == "build";
    };
    h.cancelled = [&] {
      return building && std::chrono::steady_clock::now() - t0 > std::chrono::seconds(3);
    };
    RunOutcome o = TaskRunner(s).Run(a, h);
    CHECK(o.state == "cancelled");
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20));
  }
  SUBCASE("a build that prints nothing past the stall limit fails as a build failure") {
    Assignment a = F().Task("t-silent-build", {"true"});
    a.spec.env_commit_id = Commit(F().env, {{"silent/Dockerfile",
                                             "FROM scratch\nCOPY busybox /bin/busybox\n"
                                             "RUN [\"/bin/busybox\", \"sleep\", \"30\"]\n"}});
    a.spec.dockerfile_path = "silent/Dockerfile";
    RunnerSettings s;
    s.data_dir = data;
    s.docker_socket = F().socket;
    s.git = test::GitFetch();
    s.build_stall_timeout = std::chrono::seconds(2);
    auto t0 = std::chrono::steady_clock::now();
    RunOutcome o = TaskRunner(s).Run(a, {});
    CHECK(o.state == "failed");
    CHECK(o.failure == FailureClass::kBuild);
    CHECK(o.reason ==
          "env image build printed nothing for 2 s and was stopped (the agent's "
          "--build-stall-timeout)");
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20));
  }
  SUBCASE("a build that fails") {
    Assignment a = F().Task("t-badbuild", {"true"});
    a.spec.env_commit_id = F().bad_env_commit;
    Run r = Execute(a, data);
    CHECK(r.outcome.state == "failed");
    CHECK(r.outcome.failure == FailureClass::kBuild);
    CHECK(r.outcome.reason.find("non-zero code") != std::string::npos);
    CHECK(r.out.find("[build] Step") != std::string::npos);
  }
  SUBCASE("a Dockerfile path missing in the env commit") {
    Assignment a = F().Task("t-nodockerfile", {"true"});
    a.spec.dockerfile_path = "gpu/Dockerfile";
    Run r = Execute(a, data);
    CHECK(r.outcome.failure == FailureClass::kBuild);
    CHECK(r.outcome.reason.find("no file gpu/Dockerfile") != std::string::npos);
  }
  SUBCASE("a commit that is not in the repository") {
    Assignment a = F().Task("t-nocommit", {"true"});
    a.spec.code_commit_id = std::string(40, 'e');
    Run r = Execute(a, data);
    CHECK(r.outcome.failure == FailureClass::kGit);
    CHECK(r.outcome.reason.find(std::string(40, 'e')) != std::string::npos);
  }
  SUBCASE("a repository that does not exist") {
    Assignment a = F().Task("t-norepo", {"true"});
    a.spec.code_repo_url = "file:///nonexistent/repo";
    Run r = Execute(a, data);
    CHECK(r.outcome.failure == FailureClass::kGit);
    CHECK_FALSE(r.outcome.reason.empty());
  }
  SUBCASE("no Docker engine at the socket: the runtime fails, no fallback") {
    Run r = Execute(F().Task("t-nodocker", {"true"}), data, {}, "/nonexistent/docker.sock");
    CHECK(r.outcome.failure == FailureClass::kRuntime);
    CHECK(r.outcome.reason.find("/nonexistent/docker.sock") != std::string::npos);
    CHECK(r.phases.empty());
  }
}

namespace {

/// An attempt the runner leaves running (detach, as when the agent restarts), with what the
/// agent would have recorded: the container, its start and the output's position.
struct Detached {
  RunOutcome outcome;
  Reattach at;
  std::string out;
};

/// Runs `a` until its output holds `until`, then detaches.
Detached RunThenDetach(const Assignment& a, const std::string& data, const std::string& until) {
  RunnerSettings s;
  s.data_dir = data;
  s.docker_socket = F().socket;
  s.git = test::GitFetch();
  s.stop_grace_s = 1;
  Detached d;
  std::mutex mu;
  std::atomic<bool> detach{false};
  RunnerHooks hooks;
  hooks.on_started = [&](const std::string& c, std::int64_t t) {
    d.at.container = c;
    d.at.started_unix_ms = t;
  };
  hooks.on_output = [&](bool, const LogCursor& after, std::string_view text) {
    std::lock_guard<std::mutex> lock(mu);
    if (detach) return;  // a chatty container goes on until the runner sees it
    d.out.append(text);
    d.at.cursor = after;
    if (d.out.find(until) != std::string::npos) detach = true;
  };
  hooks.detach = [&] { return detach.load(); };
  d.outcome = TaskRunner(s).Run(a, hooks);
  return d;
}

Run Resume(const Assignment& a, const std::string& data, const Reattach& at) {
  RunnerSettings s;
  s.data_dir = data;
  s.docker_socket = F().socket;
  s.stop_grace_s = 1;
  Run r;
  RunnerHooks hooks;
  hooks.on_phase = [&](const std::string& p, const RunOutcome&) { r.phases.push_back(p); };
  hooks.on_log = [&](bool e, std::string_view v) { (e ? r.err : r.out).append(v); };
  r.outcome = TaskRunner(s).Resume(a, at, hooks);
  return r;
}

bool WaitExited(const std::string& container) {
  for (int i = 0; i < 200; ++i) {
    auto st = DockerClient(F().socket).Inspect(container);
    if (st.ok() && !st.value().running) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace

TEST_CASE("a container outlives its agent: the next one follows it from where the output was") {
  std::string data = Temp("node");
  DockerClient docker(F().socket);
  SUBCASE("detached while running, resumed: every line once, then the exit code") {
    Assignment a = F().Task("t-resume", {"sh", "-c",
                                         "for i in 1 2 3; do echo line$i; done; "
                                         "sleep 2; echo line4; echo err >&2; exit 3"});
    Detached d = RunThenDetach(a, data, "line3\n");
    REQUIRE_MESSAGE(d.outcome.state == "detached", d.outcome.reason);
    CHECK(d.out == "line1\nline2\nline3\n");
    auto state = docker.Inspect(d.at.container);
    REQUIRE(state.ok());
    CHECK(state.value().running);  // left running
    Run r = Resume(a, data, d.at);
    CHECK(r.outcome.state == "failed");
    CHECK(r.outcome.failure == FailureClass::kExit);
    CHECK(r.outcome.exit_code == 3);
    CHECK(d.out + r.out == "line1\nline2\nline3\nline4\n");
    CHECK(r.err == "err\n");
    CHECK(r.phases == std::vector<std::string>{"running"});
    CHECK(r.outcome.run_ms >= 2000);  // from the container's start, not the resume
    CHECK(docker.Inspect(d.at.container).error().code == DockerError::kNotFound);  // removed
  }
  SUBCASE("it ended while no agent followed it: read to its end, and it succeeded") {
    Assignment a = F().Task("t-ended", {"sh", "-c", "echo before; sleep 1; echo after"});
    Detached d = RunThenDetach(a, data, "before\n");
    REQUIRE(d.outcome.state == "detached");
    REQUIRE(WaitExited(d.at.container));
    Run r = Resume(a, data, d.at);
    CHECK(r.outcome.state == "succeeded");
    CHECK(d.out + r.out == "before\nafter\n");
  }
  SUBCASE("it was killed while no agent followed it: lost, not the task's failure") {
    Assignment a = F().Task("t-killed", {"sh", "-c", "echo up; sleep 30"});
    Detached d = RunThenDetach(a, data, "up\n");
    REQUIRE(d.outcome.state == "detached");
    REQUIRE(docker.Stop(d.at.container, 0).ok());  // as an engine or machine restart does
    Run r = Resume(a, data, d.at);
    CHECK(r.outcome.state == "lost");
    CHECK(r.outcome.failure == FailureClass::kLost);
    CHECK(r.outcome.reason.find("signal 9") != std::string::npos);
  }
  SUBCASE("a task that crashed while no agent followed it: its own failure, not lost") {
    // The shell is PID 1 in the container, which ignores signals: a child crashes, and the
    // shell exits with its status (128 + SIGSEGV).
    Assignment a =
        F().Task("t-crashed", {"sh", "-c", "echo up; sleep 1; sh -c 'kill -SEGV $$'; exit $?"});
    Detached d = RunThenDetach(a, data, "up\n");
    REQUIRE(d.outcome.state == "detached");
    REQUIRE(WaitExited(d.at.container));
    Run r = Resume(a, data, d.at);
    CHECK(r.outcome.state == "failed");
    CHECK(r.outcome.failure == FailureClass::kExit);
    CHECK(r.outcome.exit_code == 139);
  }
  SUBCASE("a container that never stops printing is still left at once") {
    // The detach is asked for with every piece of the stream, not only when it pauses (here it
    // pauses now and then anyway, so this checks the outcome, not which path saw it).
    Assignment a = F().Task("t-chatty", {"sh", "-c", "echo start; yes chatty"});
    auto t0 = std::chrono::steady_clock::now();
    Detached d = RunThenDetach(a, data, "start\n");
    CHECK(d.outcome.state == "detached");
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30));
    CHECK(docker.Remove(d.at.container).ok());
  }
  SUBCASE("its container is gone: lost") {
    Assignment a = F().Task("t-gone", {"sh", "-c", "echo up; sleep 30"});
    Detached d = RunThenDetach(a, data, "up\n");
    REQUIRE(d.outcome.state == "detached");
    REQUIRE(docker.Remove(d.at.container).ok());
    Run r = Resume(a, data, d.at);
    CHECK(r.outcome.state == "lost");
    CHECK(r.outcome.reason.find("is gone") != std::string::npos);
  }
  SUBCASE("the timeout counts from the container's start, not from the resume") {
    Assignment a = F().Task("t-late", {"sh", "-c", "echo up; sleep 30"});
    // Counted from the start it ends about a second after the resume (then the 1 s grace);
    // counted from the resume it would take the whole 6 s more.
    a.spec.timeout_s = 6;
    Detached d = RunThenDetach(a, data, "up\n");
    REQUIRE(d.outcome.state == "detached");
    std::this_thread::sleep_for(std::chrono::seconds(5));
    auto t0 = std::chrono::steady_clock::now();
    Run r = Resume(a, data, d.at);
    CHECK(r.outcome.state == "timed_out");
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  }
  CHECK(docker.ListByLabel("unidesk.task").value().empty());
}
