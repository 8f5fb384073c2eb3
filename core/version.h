#pragma once
// What this build is: the release version and the commit it was built from (DESIGN §9). The
// commit lives in one generated file (core/version.cpp.in), so a new commit recompiles that
// file alone, not every file that prints it.

namespace unidesk::core {

/// The commit this build came from (12 hex digits), or "unknown" outside a git checkout.
const char* GitCommit();

}  // namespace unidesk::core
