#include "provider/log_cursor.h"

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

LogCursor::LogCursor(std::string at, std::int64_t read_at)
    : at_(std::move(at)), read_at_(read_at), to_skip_(read_at), resuming_(!at_.empty()) {}

bool LogCursor::Take(std::string_view at) {
  auto t = ParseDockerTime(at);
  if (!t) return true;  // not a time Docker wrote: deliver, and keep the position
  auto last = ParseDockerTime(at_);
  if (last && resuming_) {
    // What the inclusive `since` sends again: the saved time's entries already read.
    if (*t < *last) return false;
    if (*t == *last && to_skip_ > 0) {
      --to_skip_;
      return false;
    }
  }
  resuming_ = false;
  // The stdout and stderr copiers stamp entries apart, so times can step back a little; the
  // cursor keeps the latest time and counts the entries read at it.
  if (last && *t == *last) {
    ++read_at_;
  } else if (!last || *last < *t) {
    at_ = std::string(at);
    read_at_ = 1;
  }
  return true;
}

std::string LogCursor::SinceParam() const {
  auto t = ParseDockerTime(at_);
  if (!t) return "";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld.%09lld", static_cast<long long>(t->seconds),
                static_cast<long long>(t->nanos));
  return buf;
}

}  // namespace unidesk::provider
