#include "provider/task_runner.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>

#include "core/ids.h"
#include "provider/docker_client.h"
#include "provider/git_cache.h"
#include "provider/host_hygiene.h"
#include "provider/machine.h"
#include "provider/tar.h"

namespace unidesk::provider {

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

/// Wall-clock time: it outlives the process, unlike the steady clock.
std::int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string AttemptDir(const std::string& data_dir, const Assignment& a) {
  return data_dir + "/work/" + a.task_id + "-" + std::to_string(a.attempt);
}

RunOutcome Failed(RunOutcome o, FailureClass c, std::string reason) {
  o.state = c == FailureClass::kCancelled ? "cancelled"
            : c == FailureClass::kTimeout ? "timed_out"
            : c == FailureClass::kLost    ? "lost"
                                          : "failed";
  o.failure = c;
  o.reason = std::move(reason);
  return o;
}

FailureClass FromGit(GitError e) {
  return e == GitError::kCancelled ? FailureClass::kCancelled : FailureClass::kGit;
}

FailureClass FromDocker(DockerError e, FailureClass otherwise) {
  if (e == DockerError::kCancelled) return FailureClass::kCancelled;
  if (e == DockerError::kUnreachable) return FailureClass::kRuntime;
  return otherwise;
}

}  // namespace

const char* FailureClassName(FailureClass c) {
  switch (c) {
    case FailureClass::kNone:
      return "";
    case FailureClass::kGit:
      return "git";
    case FailureClass::kBuild:
      return "build";
    case FailureClass::kStart:
      return "start";
    case FailureClass::kExit:
      return "exit";
    case FailureClass::kTimeout:
      return "timeout";
    case FailureClass::kCancelled:
      return "cancelled";
    case FailureClass::kRuntime:
      return "runtime";
    case FailureClass::kLost:
      return "lost";
  }
  return "";
}

std::string EnvImageTag(const std::string& env_repo_url, const std::string& env_commit_id,
                        const std::string& dockerfile_path) {
  std::string h = core::Sha256Hex(env_repo_url + '\n' + env_commit_id + '\n' + dockerfile_path);
  return "unidesk-env/" + h.substr(0, 24) + ":" + env_commit_id.substr(0, 12);
}

RunOutcome TaskRunner::Run(const Assignment& a, const RunnerHooks& hooks) {
  namespace fs = std::filesystem;
  auto t0 = Clock::now();
  RunOutcome o;
  auto phase = [&](const char* p) {
    if (hooks.on_phase) hooks.on_phase(p, o);
  };
  auto log = [&](bool err, std::string_view s) {
    if (hooks.on_log) hooks.on_log(err, s);
  };
  auto cancelled = [&] { return hooks.cancelled && hooks.cancelled(); };
  const core::TaskSpec& spec = a.spec;
  std::string attempt_dir = AttemptDir(s_.data_dir, a);
  std::string workspace = attempt_dir + "/workspace";
  std::error_code ec;
  fs::remove_all(attempt_dir, ec);
  fs::create_directories(attempt_dir, ec);
  if (ec)
    return Failed(o, FailureClass::kRuntime, "cannot create " + attempt_dir + ": " + ec.message());

  DockerClient docker(s_.docker_socket);
  if (auto ping = docker.Ping(); !ping.ok()) {
    return Failed(o, FailureClass::kRuntime, ping.error().message);
  }

  // A GPU that fails its health check now would fail the task in ways that look like the
  // task's fault; say it is the node's, before any work (the heartbeat takes the node out of
  // GPU placement).
  if (!a.gpu_indices.empty() && !s_.nvidia_smi.empty()) {
    GpuHealth gpus = CheckGpus(s_.nvidia_smi);
    if (!gpus.ok) return Failed(o, FailureClass::kRuntime, "GPU health check: " + gpus.detail);
  }

  // 1. The code at its commit.
  phase("git");
  GitCache git(s_.data_dir, s_.git);
  auto git_progress = [&](const std::string& line) { log(false, "[git] " + line + "\n"); };
  auto tg = Clock::now();
  auto code =
      git.Prepare(spec.code_repo_url, spec.code_commit_id, workspace, cancelled, git_progress);
  o.git_ms = MsSince(tg);
  if (!code.ok()) return Failed(o, FromGit(code.error().code), code.error().message);
  o.code_fetched = code.value().fetched;
  TouchUsed(git.MirrorPath(spec.code_repo_url));  // host hygiene collects by last use

  // 2. The env image: reused by tag, else built from the env repository at its commit.
  o.image = EnvImageTag(spec.env_repo_url, spec.env_commit_id, spec.dockerfile_path);
  auto exists = docker.ImageExists(o.image);
  if (!exists.ok()) return Failed(o, FailureClass::kRuntime, exists.error().message);
  if (!exists.value()) {
    phase("build");
    auto tb = Clock::now();
    std::string env_dir = attempt_dir + "/env";
    auto env = git.Prepare(spec.env_repo_url, spec.env_commit_id, env_dir, cancelled, git_progress);
    if (!env.ok()) {
      o.build_ms = MsSince(tb);
      return Failed(o, FromGit(env.error().code), "env repository: " + env.error().message);
    }
    o.env_fetched = env.value().fetched;
    if (!fs::is_regular_file(env_dir + "/" + spec.dockerfile_path)) {
      o.build_ms = MsSince(tb);
      return Failed(o, FailureClass::kBuild,
                    "no file " + spec.dockerfile_path + " in " + spec.env_repo_url + " at " +
                        spec.env_commit_id);
    }
    auto context = TarDirectory(env_dir);
    if (!context.ok()) return Failed(o, FailureClass::kBuild, context.error().message);
    // A build that prints nothing for the stall limit is stopped: a RUN step waiting on a
    // network that never answers would otherwise hold the attempt until someone cancels it.
    auto last_line = Clock::now();
    bool stalled = false;
    auto stop_build = [&] {
      if (cancelled()) return true;
      stalled =
          s_.build_stall_timeout.count() > 0 && Clock::now() - last_line > s_.build_stall_timeout;
      return stalled;
    };
    auto built = docker.Build(
        context.value(), spec.dockerfile_path, o.image,
        {{"unidesk.env_repo", spec.env_repo_url},
         {"unidesk.env_commit", spec.env_commit_id},
         {"unidesk.dockerfile", spec.dockerfile_path}},
        [&](const std::string& line) { log(false, "[build] " + line + "\n"); }, stop_build,
        [&] { last_line = Clock::now(); });
    o.build_ms = MsSince(tb);
    fs::remove_all(env_dir, ec);
    if (!built.ok() && stalled) {
      return Failed(o, FailureClass::kBuild,
                    "env image build printed nothing for " +
                        std::to_string(s_.build_stall_timeout.count() / 1000) +
                        " s and was stopped (the agent's --build-stall-timeout)");
    }
    if (!built.ok()) {
      return Failed(o, FromDocker(built.error().code, FailureClass::kBuild),
                    "env image build failed: " + built.error().message);
    }
    o.image_built = true;
    TouchUsed(git.MirrorPath(spec.env_repo_url));
  }
  TouchUsed(ImageMarker(s_.data_dir, o.image));
  if (cancelled()) return Failed(o, FailureClass::kCancelled, "cancelled before the run");

  // 3. The container.
  ContainerSpec c;
  c.image = o.image;
  c.cmd = spec.command;
  for (const auto& [k, v] : spec.env) c.env.push_back(k + "=" + v);
  c.env.push_back("UNIDESK_TASK_ID=" + a.task_id);
  c.env.push_back("UNIDESK_ATTEMPT=" + std::to_string(a.attempt));
  c.working_dir = "/workspace";
  c.binds = {workspace + ":/workspace"};
  // Docker refuses a CPU limit above the machine's CPUs; a node may declare more (an operator's
  // resources file), and then the task gets the whole machine.
  c.nano_cpus = std::min<std::int64_t>(
      spec.resources.cpu_millis * 1'000'000,
      static_cast<std::int64_t>(std::max(1u, std::thread::hardware_concurrency())) * 1'000'000'000);
  c.memory_bytes = spec.resources.memory_bytes;
  c.gpu_indices = a.gpu_indices;
  c.labels = {{"unidesk.task", a.task_id}, {"unidesk.attempt", std::to_string(a.attempt)}};
  if (!s_.node.empty()) c.labels["unidesk.node"] = s_.node;
  auto id = docker.Create(c, "unidesk-" + a.task_id.substr(0, 8) + "-" + std::to_string(a.attempt) +
                                 "-" + core::NewUuid().substr(0, 8));
  if (!id.ok())
    return Failed(o, FromDocker(id.error().code, FailureClass::kStart), id.error().message);
  auto remove = [&] {
    auto removed = docker.Remove(id.value());
    if (!removed.ok())
      log(true, "[unidesk] container left behind: " + removed.error().message + "\n");
  };
  if (auto st = docker.Start(id.value()); !st.ok()) {
    remove();
    // GPUs the engine cannot hand to a container (no NVIDIA container toolkit) are the node's
    // fault, not the task's: Docker says so in these words.
    bool no_gpu_runtime =
        !c.gpu_indices.empty() &&
        st.error().message.find("could not select device driver") != std::string::npos;
    return Failed(
        o,
        no_gpu_runtime ? FailureClass::kRuntime : FromDocker(st.error().code, FailureClass::kStart),
        "the container did not start: " + st.error().message);
  }
  o.prepare_ms = MsSince(t0);
  phase("running");
  std::int64_t started = NowUnixMs();
  if (hooks.on_started) hooks.on_started(id.value(), started);
  return Follow(a, id.value(), started, LogCursor(), true, hooks, o);
}

RunOutcome TaskRunner::Resume(const Assignment& a, const Reattach& r, const RunnerHooks& hooks) {
  RunOutcome o;
  DockerClient docker(s_.docker_socket);
  auto state = docker.Inspect(r.container);
  if (!state.ok() && state.error().code == DockerError::kNotFound) {
    return Failed(o, FailureClass::kLost,
                  "its container " + r.container.substr(0, 12) +
                      " is gone (removed while no "
                      "agent followed it)");
  }
  if (!state.ok()) return Failed(o, FailureClass::kRuntime, state.error().message);
  if (hooks.on_phase) hooks.on_phase("running", o);
  // An ended container is read to its end, without the watchdog: its ending is history.
  bool running = state.value().running;
  o = Follow(a, r.container, r.started_unix_ms, r.cursor, running, hooks, o);
  // SIGTERM or SIGKILL while nobody followed it is how an engine or machine stop ends a
  // container; a task's own crash (SIGSEGV, SIGABRT) stays its failure.
  bool stopped = o.exit_code == 128 + 15 || o.exit_code == 128 + 9;
  if (!running && o.state == "failed" && stopped && !state.value().oom_killed) {
    return Failed(o, FailureClass::kLost,
                  "its container was stopped by signal " + std::to_string(o.exit_code - 128) +
                      " while no agent followed it (did the engine or the machine restart?)");
  }
  return o;
}

RunOutcome TaskRunner::Follow(const Assignment& a, const std::string& container,
                              std::int64_t started_unix_ms, const LogCursor& from, bool watch,
                              const RunnerHooks& hooks, RunOutcome o) {
  namespace fs = std::filesystem;
  const core::TaskSpec& spec = a.spec;
  DockerClient docker(s_.docker_socket);
  std::mutex log_mutex;  // the watchdog thread may log beside the log stream
  auto log = [&](bool err, std::string_view s) {
    std::lock_guard<std::mutex> lock(log_mutex);
    if (hooks.on_log) hooks.on_log(err, s);
  };
  LogCursor cursor(from.since(), from.skip());  // skips what `since` sends again
  auto output = [&](bool err, std::string_view at, std::string_view text) {
    std::lock_guard<std::mutex> lock(log_mutex);
    bool ends_line = !text.empty() && text.back() == '\n';
    if (!cursor.Take(at, err, ends_line)) return;  // reported before the agent restarted
    if (hooks.on_output) {
      hooks.on_output(err, cursor, text);
    } else if (hooks.on_log) {
      hooks.on_log(err, text);
    }
  };
  auto remove = [&] {
    auto removed = docker.Remove(container);
    if (!removed.ok())
      log(true, "[unidesk] container left behind: " + removed.error().message + "\n");
  };
  // A watchdog stops the container on timeout or cancel, and the log stream then ends; on
  // detach it stops only the following.
  std::atomic<bool> done{false}, detached{false};
  std::atomic<int> stopped_for{0};  // 1 timeout, 2 cancel
  std::thread watchdog([&] {
    while (watch && !done) {
      if (hooks.detach && hooks.detach()) {
        detached = true;
        return;
      }
      bool late = NowUnixMs() - started_unix_ms > spec.timeout_s * 1000;
      int why = late ? 1 : hooks.cancelled && hooks.cancelled() ? 2 : 0;
      if (why) {
        stopped_for = why;
        auto stop = DockerClient(s_.docker_socket).Stop(container, s_.stop_grace_s);
        if (!stop.ok())
          log(true, "[unidesk] could not stop the container: " + stop.error().message + "\n");
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  auto logs = docker.Logs(container, from.SinceParam(), output, [&] { return detached.load(); });
  if (detached) {
    watchdog.join();
    o.state = "detached";
    return o;
  }
  // The stream can end while the container runs on (it broke): a detach must still end the
  // wait, and the watchdog still enforces the timeout.
  auto exit = docker.Wait(container, [&] { return detached.load(); });
  done = true;
  watchdog.join();
  if (detached && !exit.ok()) {
    o.state = "detached";
    return o;
  }
  o.run_ms = std::max<std::int64_t>(0, NowUnixMs() - started_unix_ms);
  // Killed by the kernel for its memory limit: the task's doing, but "code 137" alone would
  // not tell the person why.
  auto ended = docker.Inspect(container);
  bool oom = ended.ok() && ended.value().oom_killed;
  if (s_.remove_ended_container) {
    remove();
  } else {
    o.container = container;
  }
  if (!logs.ok()) log(true, "[unidesk] log stream broke: " + logs.error().message + "\n");
  if (!exit.ok()) return Failed(o, FailureClass::kRuntime, exit.error().message);
  o.exit_code = exit.value();
  if (stopped_for == 1) {
    return Failed(o, FailureClass::kTimeout,
                  "ran past its timeout of " + std::to_string(spec.timeout_s) + " s");
  }
  if (stopped_for == 2) return Failed(o, FailureClass::kCancelled, "cancelled while running");
  // OOMKilled says some process was killed; the task failed by it only if it did not exit 0.
  if (oom && o.exit_code != 0) {
    return Failed(o, FailureClass::kExit,
                  "killed for running out of memory: it used its whole limit of " +
                      std::to_string(spec.resources.memory_bytes >> 20) +
                      " MiB (resources.memory_mb)");
  }
  if (o.exit_code != 0) {
    return Failed(o, FailureClass::kExit, "exited with code " + std::to_string(o.exit_code));
  }
  o.state = "succeeded";
  std::error_code ec;
  fs::remove_all(AttemptDir(s_.data_dir, a), ec);
  return o;
}

}  // namespace unidesk::provider
