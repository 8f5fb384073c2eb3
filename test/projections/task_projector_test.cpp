// The tasks projector's subscription against the catalogue: it reads every task event that
// changes a row, and never the output chunks.

#include "projections/task_projector.h"

#include <doctest/doctest.h>

#include <algorithm>

#include "core/event_catalogue.h"

using namespace unidesk;

TEST_CASE("the tasks projector subscribes to every task event but the output chunks") {
  projections::TaskProjector projector;
  std::vector<std::string> types = projector.types();
  auto subscribed = [&](const std::string& t) {
    return std::find(types.begin(), types.end(), t) != types.end();
  };
  core::EventCatalogue catalogue = core::BuiltinCatalogue();
  for (const core::EventType* t : catalogue.All()) {
    if (t->name.rfind("task.", 0) != 0) continue;
    CAPTURE(t->name);
    CHECK(subscribed(t->name) == (t->name != "task.log"));
  }
  for (const auto& t : types) {
    CAPTURE(t);
    CHECK(catalogue.Find(t) != nullptr);  // a name, not a prefix, and a declared one
  }
}

TEST_CASE("every subscribed type changes the task's row; an output chunk would change none") {
  projections::TaskProjector projector;
  for (const auto& type : projector.types()) {
    CAPTURE(type);
    core::RecordedEvent e;
    e.stream_id = "task-7f0c0e5e-0000-4000-8000-000000000001";
    e.stream_version = 1;
    e.type = type;
    e.recorded_at = "2026-11-23T08:00:00.000Z";
    e.data_json = R"({"task":"7f0c0e5e-0000-4000-8000-000000000001","attempt":1,"spec":{}})";
    core::RowChanges out;
    projector.Apply(e, out);
    CHECK(!out.changes().empty());
  }
  core::RecordedEvent log;
  log.stream_id = "tasklog-7f0c0e5e-0000-4000-8000-000000000001";
  log.type = "task.log";
  log.data_json = R"({"task":"7f0c0e5e-0000-4000-8000-000000000001","attempt":1,"seq":0,)"
                  R"("stream":"stdout","text":"hello\n"})";
  core::RowChanges out;
  projector.Apply(log, out);
  CHECK(out.changes().empty());
}
