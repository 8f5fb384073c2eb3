#pragma once
// libgit2's last error as text, for the two files that call libgit2 (git_cache.cpp and the fetch
// helper, git_fetch_command.cpp); nothing else includes <git2.h>.

#include <git2.h>

#include <string>

namespace unidesk::provider {

inline std::string GitMessage() {
  const git_error* e = git_error_last();
  return e != nullptr && e->message != nullptr ? e->message : "unknown libgit2 error";
}

}  // namespace unidesk::provider
