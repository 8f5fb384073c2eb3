#pragma once
// A small command-line parser: positional words, --flag, --key value, --key=value, and
// everything after "--" kept verbatim (a command to run).

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/result.h"

namespace unidesk::ingress {

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;                // --key value (the last one given)
  std::map<std::string, std::vector<std::string>> repeated;  // every value of a repeated --key
  std::set<std::string> flags;                               // --flag
  std::vector<std::string> rest;                             // every word after "--", verbatim

  bool Has(const std::string& flag) const { return flags.count(flag) > 0; }
  std::optional<std::string> Get(const std::string& key) const;
  std::vector<std::string> GetAll(const std::string& key) const;
};

/// Parses argv[first..]. `valued` names the options that take a value; any other --x is a flag
/// and must be in `known_flags`. An unknown option is an error naming it.
core::Result<Args, std::string> ParseArgs(int argc, char** argv, int first,
                                          const std::set<std::string>& valued,
                                          const std::set<std::string>& known_flags);

}  // namespace unidesk::ingress
