#include "provider/watched_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace unidesk::provider {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kStderrTail = 4096;

class Fd {
 public:
  Fd() = default;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Close(); }
  int& get() { return fd_; }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::string Errno(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

// Reaps a killed child; loops over EINTR so no zombie is left behind.
void Reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

WatchedResult RunWatched(const std::vector<std::string>& argv, const WatchOptions& options) {
  WatchedResult result;
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    result.end = WatchedEnd::kSpawnFailed;
    result.error = Errno("pipe", errno);
    return result;
  }
  Fd out_r, out_w, err_r, err_w;
  out_r.get() = out_pipe[0];
  out_w.get() = out_pipe[1];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    result.end = WatchedEnd::kSpawnFailed;
    result.error = Errno("pipe", errno);
    return result;
  }
  err_r.get() = err_pipe[0];
  err_w.get() = err_pipe[1];

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_w.get(), 1);  // dup2 clears close-on-exec
  posix_spawn_file_actions_adddup2(&actions, err_w.get(), 2);
  // Sockets and files of the caller's other threads stay out of the child, with or without
  // close-on-exec (a held socket would keep a peer's connection open).
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);  // the agent blocks SIGTERM in its threads
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    result.end = WatchedEnd::kSpawnFailed;
    result.error = Errno(("cannot run " + argv[0]).c_str(), rc);
    return result;
  }
  out_w.Close();  // the child's copies are the only writers left: EOF when it ends
  err_w.Close();

  // A hook that throws must not leave the child running (it may hold files the caller's locks
  // protect): kill and reap it on the way out.
  struct KillOnUnwind {
    pid_t pid;
    bool armed = true;
    ~KillOnUnwind() {
      if (!armed) return;
      ::kill(pid, SIGKILL);
      Reap(pid);
    }
  } guard{pid};
  std::string line;
  auto last_heard = Clock::now();
  bool out_open = true, err_open = true;
  int status = 0;
  for (;;) {
    // Until both pipes end, wait on them; after that (a child that closed them and lives on),
    // on the clock. Either way cancel and the stall limit are checked every 100 ms.
    pollfd fds[2] = {{out_open ? out_r.get() : -1, POLLIN, 0},
                     {err_open ? err_r.get() : -1, POLLIN, 0}};
    int n = ::poll(fds, 2, 100);
    char buf[4096];
    for (int i = 0; n > 0 && i < 2; ++i) {
      if (fds[i].revents == 0) continue;
      ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        (i == 0 ? out_open : err_open) = false;
        continue;
      }
      last_heard = Clock::now();
      if (i == 1) {
        result.stderr_tail.append(buf, static_cast<std::size_t>(got));
        if (result.stderr_tail.size() > kStderrTail) {
          result.stderr_tail.erase(0, result.stderr_tail.size() - kStderrTail);
        }
        continue;
      }
      for (ssize_t k = 0; k < got; ++k) {
        if (buf[k] != '\n') {
          if (line.size() < kStderrTail) line += buf[k];
          continue;
        }
        if (options.on_line) options.on_line(line);
        line.clear();
      }
    }
    if (!out_open && !err_open && ::waitpid(pid, &status, WNOHANG) == pid) break;
    WatchedEnd kill_for = WatchedEnd::kExited;
    if (options.cancelled && options.cancelled()) {
      kill_for = WatchedEnd::kCancelled;
    } else if (options.stall_timeout.count() > 0 &&
               Clock::now() - last_heard > options.stall_timeout) {
      kill_for = WatchedEnd::kStalled;
    }
    if (kill_for != WatchedEnd::kExited) {
      result.end = kill_for;
      return result;  // the guard kills and reaps it
    }
  }
  guard.armed = false;  // reaped by waitpid above
  if (!line.empty() && options.on_line) options.on_line(line);
  result.end = WatchedEnd::kExited;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace unidesk::provider
