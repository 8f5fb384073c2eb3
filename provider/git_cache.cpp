// libgit2 stays inside this file and the fetch helper (git_fetch_command.cpp): its error codes
// become GitFailure here and nowhere else.

#include "provider/git_cache.h"

#include <fcntl.h>
#include <git2.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <thread>

#include "core/ids.h"
#include "provider/git_fetch_command.h"
#include "provider/git_message.h"
#include "provider/watched_process.h"

namespace unidesk::provider {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using MaybeFailure = std::optional<GitFailure>;

std::int64_t MsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

template <class T, void (*F)(T*)>
struct Free {
  void operator()(T* p) const { F(p); }
};
using Repo = std::unique_ptr<git_repository, Free<git_repository, git_repository_free>>;
using Commit = std::unique_ptr<git_commit, Free<git_commit, git_commit_free>>;
using Tree = std::unique_ptr<git_tree, Free<git_tree, git_tree_free>>;
using Index = std::unique_ptr<git_index, Free<git_index, git_index_free>>;

void InitLibgit2Once() {
  static const int kInit = git_libgit2_init();
  (void)kInit;
}

GitFailure IoFailure(const std::string& what) {
  return {GitError::kIo, what + ": " + GitMessage()};
}

// An exclusive flock. The kernel drops it when its holder dies, so a killed agent never leaves
// the mirror locked. The file is never unlinked: that would let two holders lock two inodes.
class FlockGuard {
 public:
  FlockGuard() = default;
  FlockGuard(const FlockGuard&) = delete;
  FlockGuard& operator=(const FlockGuard&) = delete;
  ~FlockGuard() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }

  // Polls rather than blocks so that a cancelled task stops waiting for someone else's fetch.
  MaybeFailure Acquire(const std::string& path, const CancelHook& cancelled) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return GitFailure{GitError::kIo, "open " + path + ": " + std::strerror(errno)};
    auto delay = std::chrono::milliseconds(5);
    while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      if (errno == EINTR) continue;
      if (errno != EWOULDBLOCK) {
        return GitFailure{GitError::kIo, "flock " + path + ": " + std::strerror(errno)};
      }
      if (cancelled && cancelled()) {
        return GitFailure{GitError::kCancelled, "cancelled while waiting for " + path};
      }
      std::this_thread::sleep_for(delay);
      delay = std::min(delay * 2, std::chrono::milliseconds(100));
    }
    return std::nullopt;
  }

 private:
  int fd_ = -1;
};

core::Result<Repo, GitFailure> OpenMirror(const std::string& path) {
  git_repository* raw = nullptr;
  unsigned flags = GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE;
  if (git_repository_open_ext(&raw, path.c_str(), flags, nullptr) != 0) {
    return IoFailure("open mirror " + path);
  }
  return Repo(raw);
}

core::Result<bool, GitFailure> HasCommit(git_repository* repo, const git_oid& oid) {
  git_commit* raw = nullptr;
  int rc = git_commit_lookup(&raw, repo, &oid);
  Commit commit(raw);
  if (rc == 0) return true;
  if (rc == GIT_ENOTFOUND) return false;  // also: the id names a blob or tree, not a commit
  return IoFailure("look up commit");
}

core::Result<bool, GitFailure> MirrorHasCommit(const std::string& path, const git_oid& oid) {
  auto repo = OpenMirror(path);
  if (!repo) return repo.error();
  return HasCommit(repo.value().get(), oid);
}

// libgit2 guards refs and config with `*.lock` files and writes a fetched pack as
// `objects/pack/tmp_pack_*` before it moves it into place. Under our flock nobody else writes
// the mirror, so such files were left by a fetch killed midway; a stale lock would block every
// later fetch, and a partial pack only takes disk.
void RemoveFetchLeftovers(const std::string& mirror) {
  std::error_code ec;
  for (fs::recursive_directory_iterator it(mirror, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    bool leftover = p.extension() == ".lock" || p.filename().string().rfind("tmp_pack_", 0) == 0;
    if (leftover && it->is_regular_file(ec)) fs::remove(p, ec);
  }
}

struct FetchContext {
  const FetchSettings& settings;
  const CancelHook& cancelled;
  const ProgressHook& progress;
};

// Fetches every ref of `url` into the mirror at `path`, in a child process (FetchSettings).
MaybeFailure FetchAll(const std::string& path, const std::string& url, const FetchContext& c) {
  if (c.cancelled && c.cancelled()) {
    return GitFailure{GitError::kCancelled, "fetch of " + url + " cancelled"};
  }
  if (c.settings.helper.empty()) {
    return GitFailure{GitError::kFetchFailed,
                      "fetch of " + url + " failed: no fetch helper is configured"};
  }
  WatchOptions watch;
  watch.cancelled = c.cancelled;
  watch.stall_timeout = c.settings.stall_timeout;
  watch.on_line = c.progress;
  WatchedResult r = RunWatched(
      {c.settings.helper, kGitFetchCommand, "--parent", std::to_string(::getpid()), path, url},
      watch);
  switch (r.end) {
    case WatchedEnd::kExited:
      if (r.exit_code == 0) return std::nullopt;
      break;
    case WatchedEnd::kCancelled:
      RemoveFetchLeftovers(path);
      return GitFailure{GitError::kCancelled, "fetch of " + url + " cancelled"};
    case WatchedEnd::kStalled:
      RemoveFetchLeftovers(path);
      return GitFailure{GitError::kFetchFailed,
                        "fetch of " + url + " failed: no progress for " +
                            std::to_string(c.settings.stall_timeout.count() / 1000) +
                            " s (the server did not answer, or went silent)"};
    case WatchedEnd::kSpawnFailed:
      return GitFailure{GitError::kFetchFailed, "fetch of " + url + " failed: " + r.error};
  }
  std::string why = r.stderr_tail;
  while (!why.empty() && (why.back() == '\n' || why.back() == '\r')) why.pop_back();
  if (why.empty()) {
    why = "fetch of " + url + " failed: the fetch helper exited with " +
          (r.exit_code < 0 ? std::string("a signal") : "code " + std::to_string(r.exit_code));
  }
  return GitFailure{GitError::kFetchFailed, why};
}

// The first fetch goes into `<mirror>.tmp` and is renamed into place, so a mirror that exists
// is complete. Only called under the mirror lock, so a leftover .tmp is a dead process's.
MaybeFailure CreateMirror(const std::string& mirror, const std::string& url,
                          const FetchContext& context) {
  const std::string tmp = mirror + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (ec) return GitFailure{GitError::kIo, "remove " + tmp + ": " + ec.message()};
  git_repository* raw = nullptr;
  if (git_repository_init(&raw, tmp.c_str(), /*is_bare=*/1) != 0) {
    return IoFailure("create mirror " + tmp);
  }
  git_repository_free(raw);  // an empty bare repository for the helper to fetch into
  MaybeFailure failed = FetchAll(tmp, url, context);
  if (!failed) {
    fs::rename(tmp, mirror, ec);
    if (!ec) return std::nullopt;
    failed = GitFailure{GitError::kIo, "rename " + tmp + ": " + ec.message()};
  }
  fs::remove_all(tmp, ec);
  return failed;
}

// Writes the commit's tree into `dir`. The mirror's index is never written (DONT_UPDATE_INDEX),
// so concurrent checkouts from one mirror share no file they write.
MaybeFailure CheckoutTree(const std::string& mirror, const git_oid& oid, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return GitFailure{GitError::kIo, "create workspace " + dir + ": " + ec.message()};
  auto repo = OpenMirror(mirror);
  if (!repo) return repo.error();
  git_repository* r = repo.value().get();
  git_commit* commit_raw = nullptr;
  if (git_commit_lookup(&commit_raw, r, &oid) != 0) return IoFailure("look up commit");
  Commit commit(commit_raw);
  git_tree* tree_raw = nullptr;
  if (git_commit_tree(&tree_raw, commit.get()) != 0) return IoFailure("read commit tree");
  Tree tree(tree_raw);
  git_index* index_raw = nullptr;
  if (git_index_new(&index_raw) != 0) return IoFailure("create empty index");
  Index index(index_raw);

  git_checkout_options opts = GIT_CHECKOUT_OPTIONS_INIT;
  opts.checkout_strategy =
      GIT_CHECKOUT_FORCE | GIT_CHECKOUT_RECREATE_MISSING | GIT_CHECKOUT_DONT_UPDATE_INDEX;
  opts.baseline_index = index.get();  // empty: every file of the tree is written
  opts.target_directory = dir.c_str();
  if (git_checkout_tree(r, reinterpret_cast<const git_object*>(tree.get()), &opts) != 0) {
    return IoFailure("check out into " + dir);
  }
  return std::nullopt;
}

struct Request {
  const std::string& url;
  const std::string& commit_id;
  const git_oid& oid;
  const FetchContext& fetch;
};

// Makes sure the mirror holds the commit, fetching only when it does not. Sets `fetched`,
// `mirror_created` and the lock and fetch timings of `out`.
MaybeFailure EnsureCommit(const std::string& mirror, const Request& req, PrepareOutcome& out) {
  std::error_code ec;
  // Lock-free fast path: a mirror exists only once complete, and fetches only add objects and
  // move refs (we look up by id), so reading beside a concurrent fetch is safe.
  if (fs::exists(mirror, ec)) {
    auto has = MirrorHasCommit(mirror, req.oid);
    if (!has) return has.error();
    if (has.value()) return std::nullopt;
  }
  const std::string parent = fs::path(mirror).parent_path().string();
  fs::create_directories(parent, ec);
  if (ec) return GitFailure{GitError::kIo, "create " + parent + ": " + ec.message()};

  const auto lock_start = Clock::now();
  FlockGuard lock;
  if (MaybeFailure failed = lock.Acquire(mirror + ".lock", req.fetch.cancelled)) return failed;
  out.lock_wait_ms = MsSince(lock_start);

  const auto fetch_start = Clock::now();
  if (!fs::exists(mirror, ec)) {
    if (MaybeFailure failed = CreateMirror(mirror, req.url, req.fetch)) return failed;
    out.mirror_created = true;
  } else {
    auto has = MirrorHasCommit(mirror, req.oid);  // another holder may have fetched it
    if (!has) return has.error();
    if (has.value()) return std::nullopt;
    RemoveFetchLeftovers(mirror);  // of a fetch (or an agent) killed midway
    if (MaybeFailure failed = FetchAll(mirror, req.url, req.fetch)) return failed;
  }
  out.fetched = true;
  out.fetch_ms = MsSince(fetch_start);

  auto has = MirrorHasCommit(mirror, req.oid);
  if (!has) return has.error();
  if (!has.value()) {
    return GitFailure{GitError::kCommitNotFound, "commit " + req.commit_id + " not found in " +
                                                     req.url + " (not reachable from any ref)"};
  }
  return std::nullopt;
}

}  // namespace

GitCache::GitCache(std::string data_dir, FetchSettings fetch)
    : mirrors_dir_((fs::path(data_dir) / "git" / "mirrors").string()), fetch_(std::move(fetch)) {
  InitLibgit2Once();
}

std::string GitCache::MirrorPath(const std::string& url) const {
  return (fs::path(mirrors_dir_) / (core::Sha256Hex(url) + ".git")).string();
}

PrepareResult GitCache::Prepare(const std::string& url, const std::string& commit_id,
                                const std::string& workspace_dir, const CancelHook& cancelled,
                                const ProgressHook& progress) {
  const auto start = Clock::now();
  git_oid oid;
  if (commit_id.size() != GIT_OID_HEXSZ ||
      git_oid_fromstrn(&oid, commit_id.data(), commit_id.size()) != 0) {
    return GitFailure{GitError::kInvalidCommitId,
                      "'" + commit_id + "' is not a 40-hex commit id (repository " + url + ")"};
  }
  PrepareOutcome out;
  FetchContext fetch{fetch_, cancelled, progress};
  if (MaybeFailure failed = EnsureCommit(MirrorPath(url), {url, commit_id, oid, fetch}, out)) {
    return *failed;
  }
  const auto checkout_start = Clock::now();
  if (MaybeFailure failed = CheckoutTree(MirrorPath(url), oid, workspace_dir)) return *failed;
  out.checkout_ms = MsSince(checkout_start);
  out.total_ms = MsSince(start);
  return out;
}

}  // namespace unidesk::provider
