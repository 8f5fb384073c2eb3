#pragma once
// Identifiers and hashes: event ids, advisory-lock keys, request fingerprints.

#include <cstdint>
#include <string>
#include <string_view>

namespace unidesk::core {

/// A random RFC 4122 version-4 UUID in canonical text form.
std::string NewUuid();
/// True when `s` is a UUID in canonical 8-4-4-4-12 hex form.
bool IsUuid(std::string_view s);
/// A stable 64-bit hash (FNV-1a) used as a Postgres advisory-lock key.
std::int64_t LockKey(std::string_view ns, std::string_view name);
/// Lower-case hex SHA-256 of `bytes`.
std::string Sha256Hex(std::string_view bytes);

}  // namespace unidesk::core
