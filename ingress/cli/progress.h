#pragma once
// Progress of long work: a redrawn bar on a terminal, plain lines (at most one a second) otherwise.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace unidesk::ingress {

class Progress {
 public:
  Progress(std::string label, std::int64_t total, std::FILE* out = stderr);
  /// Reports `done` of `total`.
  void Update(std::int64_t done);
  /// Final line.
  void Finish(std::int64_t done);

 private:
  void Draw(std::int64_t done, bool final);

  std::string label_;
  std::int64_t total_;
  std::FILE* out_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace unidesk::ingress
