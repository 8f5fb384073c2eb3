#pragma once
// Reading tasks from the `tasks` read model as JSON: one shape for the CLI's --json and the API.

#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <vector>

namespace unidesk::ingress::api {

/// The columns TaskJson reads, for "SELECT <kTaskColumns> FROM tasks t ...".
extern const char* const kTaskColumns;
/// One task row (selected with kTaskColumns) as a JSON object.
std::string TaskJson(const pqxx::row& r);

/// The task's JSON, or nullopt when there is no such task (yet: the projection may lag).
std::optional<std::string> FindTaskJson(pqxx::transaction_base& tx, const std::string& id);

/// Newest first; `state` "" for every state.
std::vector<std::string> ListTaskJson(pqxx::transaction_base& tx, const std::string& state,
                                      long long limit);

}  // namespace unidesk::ingress::api
