#pragma once
// Documented limits of the event log (docs/events.md, "Limits").

#include <cstddef>

namespace unidesk::core {

/// Largest `data` of one event, in bytes of JSON text. Large content belongs in the blob store.
inline constexpr std::size_t kMaxEventDataBytes = 64 * 1024;
/// Largest metadata field (actor, correlation, causation, source), in bytes.
inline constexpr std::size_t kMaxMetadataFieldBytes = 256;
/// Most events in one append request.
inline constexpr std::size_t kMaxEventsPerAppend = 1000;
/// Longest stream id, event type or idempotency key, in bytes.
inline constexpr std::size_t kMaxNameBytes = 200;

}  // namespace unidesk::core
