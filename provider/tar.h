#pragma once
// A ustar archive of a directory, in memory: the build context sent to Docker's POST /build.
// Regular files, directories and symlinks, with their modes; owners are zeroed (root), times
// fixed, and entries sorted, so the same tree always gives the same bytes (and Docker's layer
// cache sees the same context).

#include <string>

#include "core/result.h"

namespace unidesk::provider {

struct TarError {
  std::string message;
};

/// The archive of everything under `dir` (not `dir` itself), or why not (unreadable file,
/// path too long for ustar, a special file). `.git` at the top is left out.
core::Result<std::string, TarError> TarDirectory(const std::string& dir);

}  // namespace unidesk::provider
