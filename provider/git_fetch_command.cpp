// The fetch half of the git cache, run in a child process (git_cache.cpp starts it).

#include "provider/git_fetch_command.h"

#include <git2.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "provider/git_message.h"

namespace unidesk::provider {
namespace {

using Clock = std::chrono::steady_clock;

struct Progress {
  Clock::time_point last_line{};
  std::string remote;  // the server's sideband text not yet printed
};

bool Due(Progress& p) {
  auto now = Clock::now();
  if (now - p.last_line < std::chrono::milliseconds(500)) return false;
  p.last_line = now;
  return true;
}

int OnTransfer(const git_indexer_progress* s, void* payload) {
  auto* p = static_cast<Progress*>(payload);
  if (!Due(*p)) return 0;
  std::printf("received %u/%u objects (%.1f MiB), resolved %u/%u deltas\n", s->received_objects,
              s->total_objects, static_cast<double>(s->received_bytes) / (1 << 20),
              s->indexed_deltas, s->total_deltas);
  std::fflush(stdout);
  return 0;
}

// The server's own progress ("Counting objects:  45% (9/20)"), which arrives in fragments and
// rewrites its line with '\r': the latest whole line per interval.
int OnSideband(const char* text, int len, void* payload) {
  auto* p = static_cast<Progress*>(payload);
  p->remote.append(text, static_cast<std::size_t>(len));
  std::string latest;
  std::size_t start = 0;
  for (std::size_t i = 0; i < p->remote.size(); ++i) {
    if (p->remote[i] != '\r' && p->remote[i] != '\n') continue;
    if (i > start) latest = p->remote.substr(start, i - start);
    start = i + 1;
  }
  p->remote.erase(0, start);
  if (p->remote.size() > 4096) p->remote.clear();  // a line without end: not progress
  if (latest.empty() || !Due(*p)) return 0;
  std::printf("remote: %s\n", latest.c_str());
  std::fflush(stdout);
  return 0;
}

// Refs move after the pack is in; a repository with many refs takes a while here too.
int OnUpdateTips(const char* ref, const git_oid*, const git_oid*, void* payload) {
  auto* p = static_cast<Progress*>(payload);
  if (!Due(*p)) return 0;
  std::printf("updating refs: %s\n", ref);
  std::fflush(stdout);
  return 0;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  return 1;
}

}  // namespace

int RunGitFetchCommand(int argc, char** argv) {
  if (argc != 4 || std::strcmp(argv[0], "--parent") != 0) {
    std::fprintf(stderr, "usage: unidesk-provider git-fetch --parent PID MIRROR URL\n");
    return 2;
  }
  // Dies with the agent: a fetch left running would write into a mirror a new agent locks.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != static_cast<pid_t>(std::atol(argv[1]))) {
    std::fprintf(stderr, "git-fetch: the agent (pid %s) is gone\n", argv[1]);
    return 2;
  }
  const std::string mirror = argv[2], url = argv[3];

  git_libgit2_init();
  git_repository* repo_raw = nullptr;
  unsigned flags = GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE;
  if (git_repository_open_ext(&repo_raw, mirror.c_str(), flags, nullptr) != 0) {
    return Fail("open mirror " + mirror + ": " + GitMessage());
  }
  std::unique_ptr<git_repository, void (*)(git_repository*)> repo(repo_raw, git_repository_free);
  git_remote* remote_raw = nullptr;
  if (git_remote_create_anonymous(&remote_raw, repo.get(), url.c_str()) != 0) {
    return Fail("fetch of " + url + " failed: " + GitMessage());
  }
  std::unique_ptr<git_remote, void (*)(git_remote*)> remote(remote_raw, git_remote_free);

  Progress progress;
  auto start = Clock::now();
  git_fetch_options opts = GIT_FETCH_OPTIONS_INIT;
  opts.callbacks.transfer_progress = OnTransfer;
  opts.callbacks.sideband_progress = OnSideband;
  opts.callbacks.update_tips = OnUpdateTips;
  opts.callbacks.payload = &progress;
  opts.prune = GIT_FETCH_PRUNE;  // as a mirror does: refs/* onto refs/*, forced, pruned
  opts.update_fetchhead = 0;
  opts.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_ALL;
  char spec[] = "+refs/*:refs/*";
  char* specs[] = {spec};
  git_strarray refspecs{specs, 1};
  if (git_remote_fetch(remote.get(), &refspecs, &opts, "unidesk mirror fetch") != 0) {
    return Fail("fetch of " + url + " failed: " + GitMessage());
  }
  const git_indexer_progress* s = git_remote_stats(remote.get());
  std::printf(
      "fetched %u objects (%.1f MiB) in %lld ms\n", s->received_objects,
      static_cast<double>(s->received_bytes) / (1 << 20),
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()));
  std::fflush(stdout);
  return 0;
}

}  // namespace unidesk::provider
