#include "projections/node_projector.h"

#include "core/json.h"

namespace unidesk::projections {

namespace {

using Values = std::vector<std::optional<std::string>>;

/// Sets `columns` of the node's row (the row exists from node.registered on).
void Set(core::RowChanges& out, const std::string& node, std::vector<std::string> columns,
         Values values) {
  columns.insert(columns.begin(), "name");
  values.insert(values.begin(), node);
  out.Upsert("nodes", {"name"}, std::move(columns), std::move(values));
}

void Status(core::RowChanges& out, const core::RecordedEvent& e, const std::string& node,
            const std::string& status, const core::JsonReader& data) {
  Set(out, node, {"status", "status_since", "status_reason"},
      {status, e.recorded_at, data.Str("reason").value_or("")});
}

}  // namespace

void NodeProjector::Apply(const core::RecordedEvent& e, core::RowChanges& out) const {
  if (e.type.rfind("node.", 0) != 0) return;
  core::JsonReader data(e.data_json);
  std::string node = data.Str("node").value_or(e.stream_id.substr(5));
  if (e.type == "node.registered") {
    Set(out, node,
        {"status", "status_since", "status_reason", "labels", "resources", "health", "runtimes",
         "agent_version", "protocol_version", "session_id", "connected_since", "registered_at",
         "revoked_at"},
        {"registered", e.recorded_at, "never connected", data.Raw("labels").value_or("{}"),
         std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
         std::nullopt, e.recorded_at, std::nullopt});
  } else if (e.type == "node.token_revoked") {
    Set(out, node, {"status", "status_since", "status_reason", "revoked_at", "session_id"},
        {"revoked", e.recorded_at, "token revoked", e.recorded_at, std::nullopt});
  } else if (e.type == "node.connected") {
    Set(out, node,
        {"labels", "resources", "health", "runtimes", "agent_version", "protocol_version",
         "session_id", "connected_since"},
        {data.Raw("labels"), data.Raw("resources"), data.Raw("health"), data.Raw("runtimes"),
         data.Str("agent_version"),
         data.Int("protocol_version") ? std::optional(std::to_string(*data.Int("protocol_version")))
                                      : std::nullopt,
         data.Str("session"), e.recorded_at});
  } else if (e.type == "node.disconnected") {
    Set(out, node, {"session_id", "connected_since"}, {std::nullopt, std::nullopt});
  } else if (e.type == "node.online") {
    Status(out, e, node, "online", data);
  } else if (e.type == "node.suspect") {
    Status(out, e, node, "suspect", data);
  } else if (e.type == "node.offline") {
    Status(out, e, node, "offline", data);
  } else if (e.type == "node.dormant") {
    Status(out, e, node, "dormant", data);
  } else if (e.type == "node.resources_changed") {
    Set(out, node, {"resources"}, {data.Raw("resources")});
  } else if (e.type == "node.health_changed") {
    Set(out, node, {"health"}, {data.Raw("health")});
  }
}

}  // namespace unidesk::projections
