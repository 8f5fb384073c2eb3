#include "provider/utf8.h"

namespace unidesk::provider {

namespace {

const char kReplacement[] = "\xEF\xBF\xBD";

/// Length of the sequence a lead byte starts, 0 when it cannot start one.
std::size_t LeadLength(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

/// Whether `b` may follow lead byte `lead` as its first continuation byte (no overlongs, no
/// surrogates, nothing above U+10FFFF).
bool SecondOk(unsigned char lead, unsigned char b) {
  if ((b & 0xC0) != 0x80) return false;
  if (lead == 0xE0) return b >= 0xA0;
  if (lead == 0xED) return b <= 0x9F;
  if (lead == 0xF0) return b >= 0x90;
  if (lead == 0xF4) return b <= 0x8F;
  return true;
}

}  // namespace

std::string TakeUtf8(std::string& raw, bool final) {
  std::string out;
  out.reserve(raw.size());
  std::size_t i = 0, n = raw.size();
  while (i < n) {
    auto c = static_cast<unsigned char>(raw[i]);
    if (c == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    std::size_t len = LeadLength(c);
    if (len == 1) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    std::size_t have = 1;
    bool bad = false;
    for (; have < len && i + have < n; ++have) {
      auto b = static_cast<unsigned char>(raw[i + have]);
      if (have == 1 ? !SecondOk(c, b) : (b & 0xC0) != 0x80) {
        bad = true;
        break;
      }
    }
    if (bad) {
      out += kReplacement;
      ++i;
      continue;
    }
    if (have < len) {  // cut at the end of what arrived so far
      if (!final) break;
      out += kReplacement;
      ++i;
      continue;
    }
    out.append(raw, i, len);
    i += len;
  }
  raw.erase(0, i);
  return out;
}

std::size_t Utf8Cut(const std::string& s, std::size_t max) {
  if (s.size() <= max) return s.size();
  std::size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return cut;
}

}  // namespace unidesk::provider
