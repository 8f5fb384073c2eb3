#include "provider/log_cursor.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace unidesk::provider {

namespace {

bool Digits(std::string_view s, std::size_t at, std::size_t n, int& out) {
  if (at + n > s.size()) return false;
  out = 0;
  for (std::size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

std::string Format(const DockerTime& t) {
  // RFC 3339 with nine fractional digits, as Docker writes them.
  std::time_t secs = static_cast<std::time_t>(t.seconds);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(t.nanos));
  return buf;
}

DockerTime Minus(DockerTime t, std::int64_t nanos) {
  std::int64_t total = t.nanos - nanos % 1'000'000'000;
  t.seconds -= nanos / 1'000'000'000;
  if (total < 0) {
    total += 1'000'000'000;
    --t.seconds;
  }
  t.nanos = total;
  return t;
}

}  // namespace

std::optional<DockerTime> ParseDockerTime(std::string_view s) {
  // 2026-11-23T10:11:12.123456789Z
  int y, mo, d, h, mi, se;
  if (!Digits(s, 0, 4, y) || s.size() < 20 || s[4] != '-' || !Digits(s, 5, 2, mo) || s[7] != '-' ||
      !Digits(s, 8, 2, d) || s[10] != 'T' || !Digits(s, 11, 2, h) || s[13] != ':' ||
      !Digits(s, 14, 2, mi) || s[16] != ':' || !Digits(s, 17, 2, se)) {
    return std::nullopt;
  }
  std::size_t at = 19;
  std::int64_t nanos = 0;
  if (s[at] == '.') {
    ++at;
    int n = 0;
    while (at < s.size() && s[at] >= '0' && s[at] <= '9') {
      if (n == 9) return std::nullopt;
      nanos = nanos * 10 + (s[at] - '0');
      ++n;
      ++at;
    }
    if (n == 0) return std::nullopt;
    for (; n < 9; ++n) nanos *= 10;
  }
  if (at + 1 != s.size() || s[at] != 'Z') return std::nullopt;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = se;
  return DockerTime{static_cast<std::int64_t>(timegm(&tm)), nanos};
}

std::optional<std::pair<std::string_view, std::string_view>> SplitTimestamped(
    std::string_view payload) {
  auto space = payload.find(' ');
  if (space == std::string_view::npos || !ParseDockerTime(payload.substr(0, space))) {
    return std::nullopt;
  }
  return std::make_pair(payload.substr(0, space), payload.substr(space + 1));
}

LogCursor::LogCursor(std::string since, std::int64_t skip)
    : resume_since_(ParseDockerTime(since)), resume_skip_(resume_since_ ? skip : 0) {}

bool LogCursor::Take(std::string_view at, bool is_stderr, bool ends_line) {
  auto t = ParseDockerTime(at);
  if (!t) return true;  // not a time Docker wrote: deliver it, and it moves nothing
  bool is_new = true;
  if (resume_since_) {
    if (*t < *resume_since_) return false;  // `since` does not send these; never new
    if (skipped_ < resume_skip_) {
      ++skipped_;
      is_new = false;
    }
  }
  if (!latest_ || *latest_ < *t) latest_ = t;
  std::optional<DockerTime>& open = open_line_[is_stderr ? 1 : 0];
  if (!ends_line && !open) open = t;
  if (ends_line) open.reset();
  recent_.push_back(*t);
  if (auto floor = Floor()) {
    while (!recent_.empty() && recent_.front() < *floor) recent_.pop_front();
  }
  return is_new;
}

std::optional<DockerTime> LogCursor::Floor() const {
  if (!latest_) return resume_since_;
  DockerTime floor = Minus(*latest_, kMarginNanos);
  for (const auto& open : open_line_) {
    if (open) floor = std::min(floor, *open);
  }
  // Never before where this cursor resumed: entries before it were not read here.
  if (resume_since_) floor = std::max(floor, *resume_since_);
  return floor;
}

std::string LogCursor::since() const {
  if (skipped_ < resume_skip_) return Format(*resume_since_);  // still replaying
  auto floor = Floor();
  return floor ? Format(*floor) : "";
}

std::int64_t LogCursor::skip() const {
  if (skipped_ < resume_skip_) return resume_skip_;
  auto floor = Floor();
  if (!floor) return 0;
  return std::count_if(recent_.begin(), recent_.end(),
                       [&](const DockerTime& t) { return !(t < *floor); });
}

std::string LogCursor::SinceParam() const {
  auto t = ParseDockerTime(since());
  if (!t) return "";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld.%09lld", static_cast<long long>(t->seconds),
                static_cast<long long>(t->nanos));
  return buf;
}

}  // namespace unidesk::provider
