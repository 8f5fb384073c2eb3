// The group-commit planner is pure: table-driven checks with no Postgres.

#include "core/detail/append_plan.h"

#include <doctest/doctest.h>

using namespace unidesk::core;
using namespace unidesk::core::detail;

namespace {

AppendRequest Req(std::string stream, ExpectedVersion expected, int events = 1,
                  std::optional<std::string> key = std::nullopt) {
  AppendRequest r{std::move(stream), expected, {}, std::move(key)};
  for (int i = 0; i < events; ++i) r.events.push_back({"t", "{}", {}, "id-" + std::to_string(i)});
  return r;
}

std::vector<PlanStep> Plan(const std::vector<AppendRequest>& reqs, GroupState state = {}) {
  std::vector<const AppendRequest*> ptrs;
  std::vector<std::string> hashes;
  for (const auto& r : reqs) {
    ptrs.push_back(&r);
    hashes.push_back(RequestHash(r));
  }
  return PlanGroup(ptrs, hashes, std::move(state));
}

}  // namespace

TEST_CASE("appends to one stream in one group take consecutive versions") {
  auto plan = Plan({Req("s", ExpectedVersion::NoStream(), 2), Req("s", ExpectedVersion::Exactly(1)),
                    Req("s", ExpectedVersion::Any())});
  REQUIRE(plan.size() == 3);
  CHECK(plan[0].kind == StepKind::kWrite);
  CHECK(plan[0].first_version == 0);
  CHECK(plan[1].kind == StepKind::kWrite);
  CHECK(plan[1].first_version == 2);
  CHECK(plan[2].first_version == 3);
}

TEST_CASE("a conflicting request is refused without disturbing the others") {
  GroupState state;
  state.stream_versions["s"] = 4;
  auto plan = Plan({Req("s", ExpectedVersion::Exactly(3)), Req("s", ExpectedVersion::NoStream()),
                    Req("s", ExpectedVersion::Exactly(4)), Req("t", ExpectedVersion::NoStream())},
                   state);
  CHECK(plan[0].kind == StepKind::kReject);
  CHECK(plan[0].error.code == AppendError::kVersionConflict);
  CHECK(plan[1].kind == StepKind::kReject);
  CHECK(plan[2].kind == StepKind::kWrite);
  CHECK(plan[2].first_version == 5);
  CHECK(plan[3].kind == StepKind::kWrite);
  CHECK(plan[3].first_version == 0);
}

TEST_CASE("a known idempotency key repeats with the same body and is refused with another") {
  AppendRequest same = Req("s", ExpectedVersion::Any(), 1, std::string("k"));
  GroupState state;
  state.keys["k"] = {RequestHash(same), "s", 10, 10, 0};
  AppendRequest other = same;
  other.events[0].data_json = "{\"x\":1}";
  auto plan = Plan({same, other}, state);
  CHECK(plan[0].kind == StepKind::kRepeat);
  CHECK(plan[0].repeat.first.value == 10);
  CHECK(plan[0].repeat.repeated);
  CHECK(plan[1].kind == StepKind::kReject);
  CHECK(plan[1].error.code == AppendError::kIdempotencyMismatch);
}

TEST_CASE("event ids already stored make a repeat only when all match") {
  GroupState state;
  state.events_by_id["id-0"] = {"s", 7, 0, "t"};
  state.events_by_id["id-1"] = {"s", 8, 1, "t"};
  auto plan = Plan({Req("s", ExpectedVersion::NoStream(), 2), Req("s", ExpectedVersion::Any(), 3),
                    Req("other", ExpectedVersion::Any(), 1)},
                   state);
  CHECK(plan[0].kind == StepKind::kRepeat);  // even though the stream exists now
  CHECK(plan[0].repeat.first.value == 7);
  CHECK(plan[0].repeat.last.value == 8);
  CHECK(plan[1].kind == StepKind::kReject);  // 2 of 3 ids stored: not the same request
  CHECK(plan[1].error.code == AppendError::kDuplicateEventId);
  CHECK(plan[2].kind == StepKind::kReject);  // same id on another stream
}

TEST_CASE("the request hash covers stream, expectation, types and data but not event ids") {
  AppendRequest a = Req("s", ExpectedVersion::Any());
  AppendRequest b = a;
  b.events[0].event_id = "another";
  CHECK(RequestHash(a) == RequestHash(b));
  b.stream_id = "s2";
  CHECK(RequestHash(a) != RequestHash(b));
  AppendRequest c = Req("s", ExpectedVersion::Exactly(0));
  CHECK(RequestHash(a) != RequestHash(c));
}

TEST_CASE("the next group keeps each stream's appends in the order they were queued") {
  struct Case {
    const char* name;
    std::vector<AppendRequest> queued;
    std::multiset<std::string> in_flight;
    std::size_t limit;
    std::vector<std::size_t> picked;
  };
  auto any = ExpectedVersion::Any();
  std::vector<Case> cases = {
      {"nothing in flight: everything, in order",
       {Req("a", any), Req("b", any), Req("a", any)},
       {},
       10,
       {0, 1, 2}},
      {"the limit takes the oldest", {Req("a", any), Req("b", any), Req("c", any)}, {}, 2, {0, 1}},
      {"a stream in flight waits, the others go",
       {Req("a", any), Req("b", any), Req("a", any), Req("c", any)},
       {"a"},
       10,
       {1, 3}},
      {"a repeated idempotency key waits, and so do its stream's later appends",
       {Req("a", any, 1, "k"), Req("b", any, 1, "k"), Req("b", any), Req("c", any)},
       {},
       10,
       {0, 3}},
      {"a request left behind keeps its key: the later one with that key waits too",
       {Req("a", any, 1, "k"), Req("b", any, 1, "k"), Req("c", any)},
       {"a"},
       10,
       {2}},
      {"every stream in flight: an empty group",
       {Req("a", any), Req("a", any)},
       {"a", "a"},
       10,
       {}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    std::vector<const AppendRequest*> queued;
    for (const auto& r : c.queued) queued.push_back(&r);
    CHECK(PickGroup(queued, c.in_flight, c.limit) == c.picked);
  }
}
