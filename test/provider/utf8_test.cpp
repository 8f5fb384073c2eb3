// Container output made safe for JSON reports: invalid bytes and NUL replaced, sequences cut
// across reads kept whole, chunk cuts on character boundaries.

#include "provider/utf8.h"

#include <doctest/doctest.h>

using namespace unidesk::provider;

TEST_CASE("valid text passes; invalid bytes and NUL become U+FFFD") {
  const std::string fffd = "\xEF\xBF\xBD";
  struct Case {
    const char* name;
    std::string in, out;
  } cases[] = {
      {"ascii", "hello\n", "hello\n"},
      {"multibyte", "\xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x99\x82",
       "\xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x99\x82"},
      {"NUL", std::string("a\0b", 3), "a" + fffd + "b"},
      {"stray continuation", "a\x80z", "a" + fffd + "z"},
      {"overlong", "\xC0\xAF", fffd + fffd},
      {"surrogate", "\xED\xA0\x80", fffd + fffd + fffd},
      {"bad lead then ascii", "\xFFok", fffd + "ok"},
      {"broken sequence", "\xE4\xBDx", fffd + fffd + "x"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    std::string raw = c.in;
    CHECK(TakeUtf8(raw, true) == c.out);
    CHECK(raw.empty());
  }
}

TEST_CASE("a sequence cut at the end waits for the rest") {
  std::string raw = "ab\xE4\xBD";
  CHECK(TakeUtf8(raw, false) == "ab");
  CHECK(raw == "\xE4\xBD");
  raw += "\xA0!";
  CHECK(TakeUtf8(raw, false) == "\xE4\xBD\xA0!");
  CHECK(raw.empty());
  raw = "\xF0\x9F";
  CHECK(TakeUtf8(raw, true) == "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("cuts fall on character boundaries") {
  std::string s = "ab\xE4\xBD\xA0";  // 2 + 3 bytes
  CHECK(Utf8Cut(s, 10) == 5);
  CHECK(Utf8Cut(s, 4) == 2);
  CHECK(Utf8Cut(s, 3) == 2);
  CHECK(Utf8Cut(s, 2) == 2);
}
