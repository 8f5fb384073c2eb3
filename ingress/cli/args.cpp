#include "ingress/cli/args.h"

namespace unidesk::ingress {

std::optional<std::string> Args::Get(const std::string& key) const {
  auto it = options.find(key);
  if (it == options.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> Args::GetAll(const std::string& key) const {
  auto it = repeated.find(key);
  return it == repeated.end() ? std::vector<std::string>{} : it->second;
}

core::Result<Args, std::string> ParseArgs(int argc, char** argv, int first,
                                          const std::set<std::string>& valued,
                                          const std::set<std::string>& known_flags) {
  Args args;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      args.rest.assign(argv + i + 1, argv + argc);
      break;
    }
    if (a.rfind("--", 0) != 0) {
      args.positional.push_back(a);
      continue;
    }
    std::string key = a.substr(2);
    std::optional<std::string> value;
    if (auto eq = key.find('='); eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    }
    if (valued.count(key)) {
      if (!value) {
        if (i + 1 >= argc) return std::string("option --" + key + " needs a value");
        value = argv[++i];
      }
      args.options[key] = *value;
      args.repeated[key].push_back(*value);
    } else if (known_flags.count(key) && !value) {
      args.flags.insert(key);
    } else {
      return std::string("unknown option --" + key);
    }
  }
  return args;
}

}  // namespace unidesk::ingress
