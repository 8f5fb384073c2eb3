#pragma once
// Container output is bytes; reports are JSON text, which must be UTF-8 without NUL (Postgres
// jsonb refuses \u0000). These helpers make any byte stream safe to report. Pure.

#include <cstddef>
#include <string>

namespace unidesk::provider {

/// Takes the valid UTF-8 from the front of `raw`, with each invalid byte and NUL replaced by
/// U+FFFD. A sequence cut at the end of `raw` stays there for the next call, unless `final`.
std::string TakeUtf8(std::string& raw, bool final);

/// The largest length <= max that does not cut a UTF-8 sequence of the valid text `s`.
std::size_t Utf8Cut(const std::string& s, std::size_t max);

}  // namespace unidesk::provider
