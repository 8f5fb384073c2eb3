// libgit2 stays inside this file: its error codes become GitFailure here and nowhere else.

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
using Remote = std::unique_ptr<git_remote, Free<git_remote, git_remote_free>>;
using Commit = std::unique_ptr<git_commit, Free<git_commit, git_commit_free>>;
using Tree = std::unique_ptr<git_tree, Free<git_tree, git_tree_free>>;
using Index = std::unique_ptr<git_index, Free<git_index, git_index_free>>;

void InitLibgit2Once() {
  static const int kInit = git_libgit2_init();
  (void)kInit;
}

std::string GitMessage() {
  const git_error* e = git_error_last();
  return e != nullptr && e->message != nullptr ? e->message : "unknown libgit2 error";
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

struct FetchState {
  const CancelHook* cancelled;
  bool aborted = false;
};

int CheckCancel(void* payload) {
  auto* s = static_cast<FetchState*>(payload);
  if (*s->cancelled && (*s->cancelled)()) s->aborted = true;
  return s->aborted ? -1 : 0;  // non-zero makes libgit2 stop the fetch
}
int OnTransfer(const git_indexer_progress*, void* p) { return CheckCancel(p); }
int OnSideband(const char*, int, void* p) { return CheckCancel(p); }
int OnPack(int, std::uint32_t, std::uint32_t, void* p) { return CheckCancel(p); }

// Fetches every ref of `url` into `repo` as a mirror does: refs/* onto refs/*, forced, pruned.
MaybeFailure FetchAll(git_repository* repo, const std::string& url, const CancelHook& cancelled) {
  FetchState state{&cancelled};
  if (CheckCancel(&state) != 0) {
    return GitFailure{GitError::kCancelled, "fetch of " + url + " cancelled"};
  }
  git_remote* raw = nullptr;
  if (git_remote_create_anonymous(&raw, repo, url.c_str()) != 0) {
    return GitFailure{GitError::kFetchFailed, "fetch of " + url + " failed: " + GitMessage()};
  }
  Remote remote(raw);
  git_fetch_options opts = GIT_FETCH_OPTIONS_INIT;
  opts.callbacks.transfer_progress = OnTransfer;
  opts.callbacks.sideband_progress = OnSideband;
  opts.callbacks.pack_progress = OnPack;
  opts.callbacks.payload = &state;
  opts.prune = GIT_FETCH_PRUNE;
  opts.update_fetchhead = 0;
  opts.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_ALL;
  char spec[] = "+refs/*:refs/*";
  char* specs[] = {spec};
  git_strarray refspecs{specs, 1};
  if (git_remote_fetch(remote.get(), &refspecs, &opts, "unidesk mirror fetch") != 0) {
    if (state.aborted) return GitFailure{GitError::kCancelled, "fetch of " + url + " cancelled"};
    return GitFailure{GitError::kFetchFailed, "fetch of " + url + " failed: " + GitMessage()};
  }
  return std::nullopt;
}

// The first fetch goes into `<mirror>.tmp` and is renamed into place, so a mirror that exists
// is complete. Only called under the mirror lock, so a leftover .tmp is a dead process's.
MaybeFailure CreateMirror(const std::string& mirror, const std::string& url,
                          const CancelHook& cancelled) {
  const std::string tmp = mirror + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (ec) return GitFailure{GitError::kIo, "remove " + tmp + ": " + ec.message()};
  git_repository* raw = nullptr;
  if (git_repository_init(&raw, tmp.c_str(), /*is_bare=*/1) != 0) {
    return IoFailure("create mirror " + tmp);
  }
  Repo repo(raw);
  MaybeFailure failed = FetchAll(repo.get(), url, cancelled);
  repo.reset();
  if (!failed) {
    fs::rename(tmp, mirror, ec);
    if (!ec) return std::nullopt;
    failed = GitFailure{GitError::kIo, "rename " + tmp + ": " + ec.message()};
  }
  fs::remove_all(tmp, ec);
  return failed;
}

// libgit2 guards refs and config with `*.lock` files; under our flock nobody else writes the
// mirror, so any such file was left by a process killed mid-fetch and would block every fetch.
void RemoveStaleGitLocks(const std::string& mirror) {
  std::error_code ec;
  for (fs::recursive_directory_iterator it(mirror, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".lock" && it->is_regular_file(ec)) fs::remove(it->path(), ec);
  }
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
  const CancelHook& cancelled;
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
  if (MaybeFailure failed = lock.Acquire(mirror + ".lock", req.cancelled)) return failed;
  out.lock_wait_ms = MsSince(lock_start);

  const auto fetch_start = Clock::now();
  if (!fs::exists(mirror, ec)) {
    if (MaybeFailure failed = CreateMirror(mirror, req.url, req.cancelled)) return failed;
    out.mirror_created = true;
  } else {
    auto repo = OpenMirror(mirror);
    if (!repo) return repo.error();
    auto has = HasCommit(repo.value().get(), req.oid);  // another holder may have fetched it
    if (!has) return has.error();
    if (has.value()) return std::nullopt;
    RemoveStaleGitLocks(mirror);
    if (MaybeFailure failed = FetchAll(repo.value().get(), req.url, req.cancelled)) return failed;
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

GitCache::GitCache(std::string data_dir)
    : mirrors_dir_((fs::path(data_dir) / "git" / "mirrors").string()) {
  InitLibgit2Once();
}

std::string GitCache::MirrorPath(const std::string& url) const {
  return (fs::path(mirrors_dir_) / (core::Sha256Hex(url) + ".git")).string();
}

PrepareResult GitCache::Prepare(const std::string& url, const std::string& commit_id,
                                const std::string& workspace_dir, const CancelHook& cancelled) {
  const auto start = Clock::now();
  git_oid oid;
  if (commit_id.size() != GIT_OID_HEXSZ ||
      git_oid_fromstrn(&oid, commit_id.data(), commit_id.size()) != 0) {
    return GitFailure{GitError::kInvalidCommitId,
                      "'" + commit_id + "' is not a 40-hex commit id (repository " + url + ")"};
  }
  PrepareOutcome out;
  if (MaybeFailure failed = EnsureCommit(MirrorPath(url), {url, commit_id, oid, cancelled}, out)) {
    return *failed;
  }
  const auto checkout_start = Clock::now();
  if (MaybeFailure failed = CheckoutTree(MirrorPath(url), oid, workspace_dir)) return *failed;
  out.checkout_ms = MsSince(checkout_start);
  out.total_ms = MsSince(start);
  return out;
}

}  // namespace unidesk::provider
