#include "core/projection.h"

#include <algorithm>
#include <cassert>
#include <map>
#include <pqxx/tablewriter>
#include <tuple>

#include "core/checkpoint.h"

namespace unidesk::core {
namespace {

std::string Literal(pqxx::transaction_base& tx, const std::optional<std::string>& v) {
  return v ? tx.quote(*v) : "NULL";
}

std::string ColumnList(pqxx::transaction_base& tx, const std::vector<std::string>& columns) {
  std::string out;
  for (std::size_t i = 0; i < columns.size(); ++i) {
    if (i) out += ", ";
    out += tx.quote_name(columns[i]);
  }
  return out;
}

std::string ValuesTuple(pqxx::transaction_base& tx, const RowChange& c) {
  std::string out = "(";
  for (std::size_t i = 0; i < c.values.size(); ++i) {
    if (i) out += ", ";
    out += Literal(tx, c.values[i]);
  }
  return out + ")";
}

/// `v` in COPY's text format: NULL as \\N; backslash, tab, newline and return escaped.
void AppendCopyField(std::string& line, const std::optional<std::string>& v) {
  if (!v) {
    line += "\\N";
    return;
  }
  for (char ch : *v) {
    switch (ch) {
      case '\\':
        line += "\\\\";
        break;
      case '\t':
        line += "\\t";
        break;
      case '\n':
        line += "\\n";
        break;
      case '\r':
        line += "\\r";
        break;
      default:
        line.push_back(ch);
    }
  }
}

bool SameInsertShape(const RowChange& a, const RowChange& b) {
  return b.op == RowChange::Op::kInsert && a.table == b.table && a.columns == b.columns;
}

/// Upserts of one shape (table, key, columns), rows with distinct keys: one statement.
void WriteUpserts(pqxx::transaction_base& tx, const std::vector<const RowChange*>& rows) {
  const RowChange& c = *rows.front();
  std::string sql =
      "INSERT INTO " + tx.quote_name(c.table) + " (" + ColumnList(tx, c.columns) + ") VALUES ";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (i) sql += ", ";
    sql += ValuesTuple(tx, *rows[i]);
  }
  sql += " ON CONFLICT (" + ColumnList(tx, c.key_columns) + ") DO UPDATE SET ";
  for (std::size_t i = 0; i < c.columns.size(); ++i) {
    if (i) sql += ", ";
    sql += tx.quote_name(c.columns[i]) + " = EXCLUDED." + tx.quote_name(c.columns[i]);
  }
  tx.exec(sql);
}

/// The key values of an upsert, in key-column order.
std::vector<std::optional<std::string>> KeyOf(const RowChange& c) {
  std::vector<std::optional<std::string>> key;
  for (const auto& k : c.key_columns) {
    auto at = std::find(c.columns.begin(), c.columns.end(), k);
    key.push_back(at == c.columns.end() ? std::nullopt : c.values[at - c.columns.begin()]);
  }
  return key;
}

/// A run of consecutive upserts [first, last): the ones on one row merge into one (columns in
/// order of first mention, the later value winning), which is what applying them in order
/// leaves; then rows of one shape share a statement.
void WriteUpsertRun(pqxx::transaction_base& tx, std::vector<RowChange>::const_iterator first,
                    std::vector<RowChange>::const_iterator last) {
  using RowKey =
      std::tuple<std::string, std::vector<std::string>, std::vector<std::optional<std::string>>>;
  std::map<RowKey, std::size_t> index;
  std::vector<RowChange> merged;
  for (auto it = first; it != last; ++it) {
    RowKey key{it->table, it->key_columns, KeyOf(*it)};
    auto [at, fresh] = index.emplace(std::move(key), merged.size());
    if (fresh) {
      merged.push_back(*it);
      continue;
    }
    RowChange& m = merged[at->second];
    for (std::size_t i = 0; i < it->columns.size(); ++i) {
      auto col = std::find(m.columns.begin(), m.columns.end(), it->columns[i]);
      if (col == m.columns.end()) {
        m.columns.push_back(it->columns[i]);
        m.values.push_back(it->values[i]);
      } else {
        m.values[col - m.columns.begin()] = it->values[i];
      }
    }
  }
  constexpr std::size_t kRowsPerStatement = 500;
  std::map<std::tuple<std::string, std::vector<std::string>, std::vector<std::string>>,
           std::vector<const RowChange*>>
      shapes;
  for (const auto& m : merged) {
    auto& rows = shapes[{m.table, m.key_columns, m.columns}];
    rows.push_back(&m);
    if (rows.size() == kRowsPerStatement) {
      WriteUpserts(tx, rows);
      rows.clear();
    }
  }
  for (const auto& [shape, rows] : shapes) {
    if (!rows.empty()) WriteUpserts(tx, rows);
  }
}

void WriteDelete(pqxx::transaction_base& tx, const RowChange& c) {
  std::string sql = "DELETE FROM " + tx.quote_name(c.table) + " WHERE ";
  for (std::size_t i = 0; i < c.columns.size(); ++i) {
    if (i) sql += " AND ";
    sql += tx.quote_name(c.columns[i]) + " = " + Literal(tx, c.values[i]);
  }
  tx.exec(sql);
}

}  // namespace

void RowChanges::Insert(std::string table, std::vector<std::string> columns,
                        std::vector<std::optional<std::string>> values) {
  assert(columns.size() == values.size());
  changes_.push_back(
      {RowChange::Op::kInsert, std::move(table), std::move(columns), std::move(values), {}});
}

void RowChanges::Upsert(std::string table, std::vector<std::string> key_columns,
                        std::vector<std::string> columns,
                        std::vector<std::optional<std::string>> values) {
  assert(columns.size() == values.size());
  changes_.push_back({RowChange::Op::kUpsert, std::move(table), std::move(columns),
                      std::move(values), std::move(key_columns)});
}

void RowChanges::Delete(std::string table, std::vector<std::string> key_columns,
                        std::vector<std::optional<std::string>> key_values) {
  assert(key_columns.size() == key_values.size());
  changes_.push_back({RowChange::Op::kDelete,
                      std::move(table),
                      std::move(key_columns),
                      std::move(key_values),
                      {}});
}

void WriteRowChanges(pqxx::transaction_base& tx, const std::vector<RowChange>& changes) {
  std::size_t i = 0;
  while (i < changes.size()) {
    const RowChange& c = changes[i];
    if (c.op == RowChange::Op::kUpsert) {
      std::size_t end = i;
      while (end < changes.size() && changes[end].op == RowChange::Op::kUpsert) ++end;
      WriteUpsertRun(tx, changes.begin() + i, changes.begin() + end);
      i = end;
      continue;
    }
    if (c.op == RowChange::Op::kDelete) {
      WriteDelete(tx, c);
      ++i;
      continue;
    }
    // A run of inserts into one table goes through one COPY: about 1.6x the rows/s of multi-row
    // INSERT ... VALUES (docs/performance.md, replay). libpqxx 6.4 streams rows of a shape known
    // only at run time through tablewriter alone (stream_to takes tuples).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    pqxx::tablewriter copy(tx, c.table, c.columns.begin(), c.columns.end());
#pragma GCC diagnostic pop
    std::string line;
    for (; i < changes.size() && SameInsertShape(c, changes[i]); ++i) {
      line.clear();
      for (std::size_t k = 0; k < changes[i].values.size(); ++k) {
        if (k) line.push_back('\t');
        AppendCopyField(line, changes[i].values[k]);
      }
      copy.write_raw_line(line);
    }
    copy.complete();
  }
}

void ProjectionHandler::Handle(pqxx::work& tx, const std::vector<RecordedEvent>& batch) {
  scratch_.clear();
  for (const auto& e : batch) projector_.Apply(e, scratch_);
  WriteRowChanges(tx, scratch_.changes());
}

void ResetProjection(pqxx::transaction_base& tx, const Projector& projector) {
  for (const auto& table : projector.tables()) tx.exec("TRUNCATE " + tx.quote_name(table));
  ResetCheckpoint(tx, projector.name());
}

}  // namespace unidesk::core
