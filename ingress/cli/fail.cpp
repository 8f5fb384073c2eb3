#include <cstdio>

#include "ingress/cli/commands.h"

namespace unidesk::ingress {

int Fail(const std::string& message, int code) {
  std::fprintf(stderr, "unidesk: %s\n", message.c_str());
  return code;
}

std::string DatabaseDown(const std::string& conninfo, const std::exception& e) {
  std::string why = e.what();
  while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
  return "cannot reach Postgres (" + conninfo + "): " + why +
         "\n  is the database running? `ops/up` starts the local one; --db or UNIDESK_DB "
         "chooses another";
}

}  // namespace unidesk::ingress
