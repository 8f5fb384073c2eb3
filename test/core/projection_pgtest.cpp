// The projection engine's row writer: awkward values survive COPY exactly; upserts and deletes
// apply in order, and a run of upserts merged per row leaves what one by one leaves.

#include <doctest/doctest.h>

#include "core/projection.h"
#include "test/support/harness.h"

using namespace unidesk;

TEST_CASE("row changes with tabs, newlines, backslashes, quotes and NULLs are written exactly") {
  test::TestDatabase db;
  auto c = db.Connect();
  {
    pqxx::work tx(*c);
    tx.exec("CREATE TABLE rm (id bigint PRIMARY KEY, v text, n int)");
    tx.commit();
  }
  const std::vector<std::string> awkward = {
      "a\tb", "line1\nline2\r", "back\\slash \\N", "quote ' \" ", "", "\\."};
  core::RowChanges out;
  for (std::size_t i = 0; i < awkward.size(); ++i) {
    out.Insert("rm", {"id", "v", "n"}, {std::to_string(i), awkward[i], std::nullopt});
  }
  out.Upsert("rm", {"id"}, {"id", "v", "n"}, {"1", "replaced", "7"});
  out.Delete("rm", {"id"}, {"4"});
  out.Insert("rm", {"id", "v"}, {"100", std::nullopt});
  {
    pqxx::work tx(*c);
    core::WriteRowChanges(tx, out.changes());
    tx.commit();
  }
  pqxx::read_transaction tx(*c);
  auto rows = tx.exec("SELECT id, v, n FROM rm ORDER BY id");
  REQUIRE(rows.size() == awkward.size());  // 6 inserted, 1 deleted, 1 more inserted
  for (const auto& r : rows) {
    long long id = r[0].as<long long>();
    CAPTURE(id);
    if (id == 1) {
      CHECK(std::string(r[1].c_str()) == "replaced");
      CHECK(r[2].as<int>() == 7);
    } else if (id == 100) {
      CHECK(r[1].is_null());
    } else {
      CHECK(std::string(r[1].c_str()) == awkward[id]);
      CHECK(r[2].is_null());
    }
  }
}

TEST_CASE("a run of upserts leaves what applying them one by one leaves") {
  // Upserts on one row merge into one and rows of one shape share a statement; the result must
  // be the same as one statement per change, in order. Two tables written both ways compare.
  test::TestDatabase db;
  auto c = db.Connect();
  {
    pqxx::work tx(*c);
    for (const char* t : {"merged", "single"}) {
      tx.exec(std::string("CREATE TABLE ") + t +
              " (id bigint PRIMARY KEY, state text, a text, b int, c text DEFAULT 'dflt')");
      tx.exec(std::string("INSERT INTO ") + t + " (id, state, a) VALUES (9, 'old', 'kept')");
    }
    tx.commit();
  }
  auto changes = [](const std::string& table) {
    core::RowChanges out;
    out.Upsert(table, {"id"}, {"id", "state", "a"}, {"1", "queued", "x"});
    out.Upsert(table, {"id"}, {"id", "state", "b"}, {"2", "queued", "5"});
    out.Upsert(table, {"id"}, {"id", "state"}, {"1", "assigned"});
    out.Upsert(table, {"id"}, {"id", "b", "a"}, {"1", "3", std::nullopt});
    out.Upsert(table, {"id"}, {"id", "state", "b"}, {"9", "running", "1"});
    out.Upsert(table, {"id"}, {"id", "state"}, {"1", "succeeded"});
    out.Delete(table, {"id"}, {"2"});
    out.Upsert(table, {"id"}, {"id", "state"}, {"2", "again"});
    return out;
  };
  {
    pqxx::work tx(*c);
    core::WriteRowChanges(tx, changes("merged").changes());
    core::RowChanges single = changes("single");
    for (const auto& one : single.changes()) core::WriteRowChanges(tx, {one});
    tx.commit();
  }
  pqxx::read_transaction tx(*c);
  auto rows = [&](const char* t) {
    std::vector<std::string> out;
    for (const auto& r :
         tx.exec(std::string("SELECT id, state, a, b, c FROM ") + t + " ORDER BY id")) {
      std::string line;
      for (const auto& f : r) line += (f.is_null() ? "NULL" : f.c_str()) + std::string("|");
      out.push_back(line);
    }
    return out;
  };
  auto merged = rows("merged");
  CHECK(merged == rows("single"));
  REQUIRE(merged.size() == 3);
  CHECK(merged[0] == "1|succeeded|NULL|3|dflt|");
  CHECK(merged[1] == "2|again|NULL|NULL|dflt|");
  CHECK(merged[2] == "9|running|kept|1|dflt|");
}
