#include "ingress/cli/progress.h"

#include <unistd.h>

#include <algorithm>

namespace unidesk::ingress {

Progress::Progress(std::string label, std::int64_t total, std::FILE* out)
    : label_(std::move(label)),
      total_(std::max<std::int64_t>(total, 1)),
      out_(out),
      tty_(isatty(fileno(out)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

void Progress::Update(std::int64_t done) {
  auto now = std::chrono::steady_clock::now();
  auto every = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(1000);
  if (now - last_ < every) return;
  last_ = now;
  Draw(done, false);
}

void Progress::Finish(std::int64_t done) { Draw(done, true); }

void Progress::Draw(std::int64_t done, bool final) {
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = secs > 0 ? done / secs : 0;
  int pct = static_cast<int>(std::min<std::int64_t>(100, done * 100 / total_));
  if (tty_) {
    constexpr int kWidth = 30;
    int filled = pct * kWidth / 100;
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    std::fprintf(out_, "\r%s [%s] %3d%% %lld/%lld events, %.0f/s", label_.c_str(), bar.c_str(), pct,
                 static_cast<long long>(done), static_cast<long long>(total_), rate);
    if (final) std::fputc('\n', out_);
  } else {
    std::fprintf(out_, "%s: %lld/%lld events (%d%%), %.0f/s%s\n", label_.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total_), pct, rate,
                 final ? ", done" : "");
  }
  std::fflush(out_);
}

}  // namespace unidesk::ingress
