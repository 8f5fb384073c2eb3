// The projection engine's row writer: awkward values survive COPY exactly; upserts and deletes
// apply in order.

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
