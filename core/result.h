#pragma once
// Result<T, E>: the typed outcome of an operation whose failure is expected (not a bug).

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace unidesk::core {

/// An error with a machine-readable code and a message for people.
template <class Code>
struct TypedError {
  Code code;
  std::string message;
};

/// Either a value or a typed error. Callers must look at it.
template <class T, class E>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(E error) : v_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const E& error() const& {
    assert(!ok());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, E> v_;
};

/// Result of an operation with no value.
struct Unit {};

}  // namespace unidesk::core
