// docs/events.md lists exactly the builtin catalogue, and upcasting walks the declared chain.

#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "core/event_catalogue.h"
#include "test/support/harness.h"

using namespace unidesk;

namespace {

using Row = std::tuple<std::string, int, std::string>;  // (type, version, stream)

const char* const kHeader = "| type | version | stream | description |";

std::string Trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r");
  auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string Unquote(const std::string& cell) {
  std::string t = Trim(cell);
  if (t.size() >= 2 && t.front() == '`' && t.back() == '`') return t.substr(1, t.size() - 2);
  return t;
}

/// The cells of a markdown table line, honouring `\|` inside a cell.
std::vector<std::string> Cells(const std::string& line) {
  std::vector<std::string> cells;
  std::string t = Trim(line);
  if (t.empty() || t.front() != '|') return cells;
  std::string cur;
  for (std::size_t i = 1; i < t.size(); ++i) {
    if (t[i] == '\\' && i + 1 < t.size() && t[i + 1] == '|') {
      cur += '|';
      ++i;
    } else if (t[i] == '|') {
      cells.push_back(cur);
      cur.clear();
    } else {
      cur += t[i];
    }
  }
  return cells;
}

std::string Describe(const Row& r) {
  return std::get<0>(r) + " v" + std::to_string(std::get<1>(r)) + " (stream " + std::get<2>(r) +
         ")";
}

struct DocTable {
  std::vector<Row> rows;
  std::vector<std::string> problems;
};

/// Parses the one catalogue table of docs/events.md.
DocTable ParseEventsDoc(std::istream& in) {
  DocTable doc;
  int tables = 0;
  bool inside = false;
  bool separator_seen = false;
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    std::string t = Trim(line);
    if (t == kHeader) {
      ++tables;
      inside = true;
      separator_seen = false;
      continue;
    }
    if (!inside) continue;
    if (t.empty() || t.front() != '|') {
      inside = false;
      continue;
    }
    if (!separator_seen) {
      separator_seen = true;  // the |---|---| line
      continue;
    }
    std::vector<std::string> cells = Cells(t);
    std::string at = "docs/events.md:" + std::to_string(line_no) + ": ";
    if (cells.size() != 4) {
      doc.problems.push_back(at + "expected 4 cells, found " + std::to_string(cells.size()));
      continue;
    }
    std::string type = Trim(cells[0]);
    if (type.size() < 3 || type.front() != '`' || type.back() != '`') {
      doc.problems.push_back(at + "the type must be in backticks: " + type);
      continue;
    }
    int version = 0;
    try {
      std::size_t used = 0;
      version = std::stoi(Trim(cells[1]), &used);
      if (used != Trim(cells[1]).size()) throw std::invalid_argument("trailing text");
    } catch (const std::exception&) {
      doc.problems.push_back(at + "version is not a whole number: " + Trim(cells[1]));
      continue;
    }
    if (Trim(cells[3]).empty()) doc.problems.push_back(at + "the description is empty");
    doc.rows.emplace_back(Unquote(type), version, Unquote(cells[2]));
  }
  if (tables != 1) {
    doc.problems.push_back("docs/events.md must hold exactly one table headed '" +
                           std::string(kHeader) + "', found " + std::to_string(tables));
  }
  return doc;
}

}  // namespace

TEST_CASE("docs/events.md lists exactly the types, versions and streams of the builtin catalogue") {
  std::string path = test::RepoRoot() + "/docs/events.md";
  std::ifstream file(path);
  REQUIRE_MESSAGE(file.good(), "cannot read " << path);
  DocTable doc = ParseEventsDoc(file);
  for (const auto& p : doc.problems) FAIL_CHECK(p);

  std::set<Row> documented;
  for (const auto& r : doc.rows) {
    if (!documented.insert(r).second) FAIL_CHECK("docs/events.md lists twice: " << Describe(r));
  }
  const core::EventCatalogue catalogue = core::BuiltinCatalogue();
  std::set<Row> declared;
  for (const core::EventType* t : catalogue.All()) {
    declared.emplace(t->name, t->schema_version, t->stream);
  }

  for (const auto& r : declared) {
    if (!documented.count(r)) {
      FAIL_CHECK("declared in core/builtin_catalogue.cpp but missing from docs/events.md: "
                 << Describe(r));
    }
  }
  for (const auto& r : documented) {
    if (!declared.count(r)) {
      FAIL_CHECK("listed in docs/events.md but not declared in core/builtin_catalogue.cpp: "
                 << Describe(r));
    }
  }
  CHECK(documented.size() == declared.size());
}

TEST_CASE("the doc parser reports a missing table, a bad row and an unquoted type") {
  std::istringstream none("# Events\n\nno table here\n");
  CHECK_FALSE(ParseEventsDoc(none).problems.empty());

  std::istringstream bad(std::string(kHeader) +
                         "\n| --- | --- | --- | --- |\n"
                         "| `a.b` | 1 | `a` | fine |\n"
                         "| c.d | 1 | `c` | type not in backticks |\n"
                         "| `e.f` | one | `e` | version not a number |\n"
                         "| `g.h` | 2 | `g` |\n");
  DocTable doc = ParseEventsDoc(bad);
  REQUIRE(doc.rows.size() == 1);
  CHECK(doc.rows[0] == Row{"a.b", 1, "a"});
  CHECK(doc.problems.size() == 3);
}

TEST_CASE("upcasting refuses an unknown type and an unknown version") {
  core::EventCatalogue catalogue(
      {{"thing.happened", 2, "thing-{id}", "a test type", {{1, [](const std::string& d) {
                                                              return d;
                                                            }}}}});
  auto unknown_type = catalogue.Upcast("thing.vanished", 1, "{}");
  REQUIRE_FALSE(unknown_type.ok());
  CHECK(unknown_type.error().code == core::CatalogueError::kUnknownType);

  for (int version : {0, 3}) {
    auto unknown_version = catalogue.Upcast("thing.happened", version, "{}");
    REQUIRE_FALSE(unknown_version.ok());
    CHECK(unknown_version.error().code == core::CatalogueError::kUnknownVersion);
  }
}

TEST_CASE("upcasting runs the chain v1 -> v2 -> v3 in order and stops at the current version") {
  core::EventCatalogue catalogue(
      {{"thing.happened",
        3,
        "thing-{id}",
        "a test type at version 3",
        {{1, [](const std::string& d) { return "{\"v2\": " + d + "}"; }},
         {2, [](const std::string& d) { return "{\"v3\": " + d + "}"; }}}}});
  auto from_v1 = catalogue.Upcast("thing.happened", 1, "{}");
  REQUIRE(from_v1.ok());
  CHECK(from_v1.value() == "{\"v3\": {\"v2\": {}}}");

  auto from_v2 = catalogue.Upcast("thing.happened", 2, "{}");
  REQUIRE(from_v2.ok());
  CHECK(from_v2.value() == "{\"v3\": {}}");

  auto current = catalogue.Upcast("thing.happened", 3, "{\"x\": 1}");
  REQUIRE(current.ok());
  CHECK(current.value() == "{\"x\": 1}");
}

TEST_CASE("upcasting through a missing link of the chain is an unknown version") {
  core::EventCatalogue catalogue({{"thing.happened",
                                   3,
                                   "thing-{id}",
                                   "v2 -> v3 is not declared",
                                   {{1, [](const std::string& d) { return d; }}}}});
  auto r = catalogue.Upcast("thing.happened", 1, "{}");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == core::CatalogueError::kUnknownVersion);
}
