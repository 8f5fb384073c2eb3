#pragma once
// The sessions this ingress copy holds, by node: one live session per node.

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace unidesk::ingress {

class ProviderSession;

class SessionRegistry {
 public:
  /// Makes `s` the node's session here; returns the one it replaces (to be closed), if any.
  std::shared_ptr<ProviderSession> Put(const std::string& node, std::shared_ptr<ProviderSession> s);
  /// Removes the node's entry only when it is `s`.
  void Remove(const std::string& node, const ProviderSession* s);
  std::shared_ptr<ProviderSession> Find(const std::string& node) const;
  std::vector<std::shared_ptr<ProviderSession>> All() const;
  std::size_t size() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::weak_ptr<ProviderSession>> sessions_;
};

}  // namespace unidesk::ingress
