#pragma once
// `unidesk-provider git-fetch --parent PID MIRROR URL`: fetches every ref of URL into the bare
// repository MIRROR, in a process of its own so that the git cache can kill a fetch libgit2
// cannot interrupt (a server that accepts and never answers). Progress goes to stdout, a line
// at most every 500 ms while data arrives (the parent's sign of life); the error to stderr.
// Exit: 0 fetched, 1 the fetch failed, 2 bad arguments or the parent is gone.

namespace unidesk::provider {

inline constexpr const char* kGitFetchCommand = "git-fetch";

/// argv after the command name.
int RunGitFetchCommand(int argc, char** argv);

}  // namespace unidesk::provider
