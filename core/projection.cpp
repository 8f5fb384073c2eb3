#include "core/projection.h"

#include <cassert>

#include "core/checkpoint.h"

namespace unidesk::core {
namespace {

constexpr std::size_t kRowsPerStatement = 1000;

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

bool SameInsertShape(const RowChange& a, const RowChange& b) {
  return b.op == RowChange::Op::kInsert && a.table == b.table && a.columns == b.columns;
}

void WriteUpsert(pqxx::transaction_base& tx, const RowChange& c) {
  std::string sql = "INSERT INTO " + tx.quote_name(c.table) + " (" + ColumnList(tx, c.columns) +
                    ") VALUES " + ValuesTuple(tx, c) + " ON CONFLICT (" +
                    ColumnList(tx, c.key_columns) + ") DO UPDATE SET ";
  for (std::size_t i = 0; i < c.columns.size(); ++i) {
    if (i) sql += ", ";
    sql += tx.quote_name(c.columns[i]) + " = EXCLUDED." + tx.quote_name(c.columns[i]);
  }
  tx.exec(sql);
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
      WriteUpsert(tx, c);
      ++i;
      continue;
    }
    if (c.op == RowChange::Op::kDelete) {
      WriteDelete(tx, c);
      ++i;
      continue;
    }
    std::string sql =
        "INSERT INTO " + tx.quote_name(c.table) + " (" + ColumnList(tx, c.columns) + ") VALUES ";
    std::size_t n = 0;
    while (i < changes.size() && n < kRowsPerStatement && SameInsertShape(c, changes[i])) {
      if (n) sql += ", ";
      sql += ValuesTuple(tx, changes[i]);
      ++i;
      ++n;
    }
    tx.exec(sql);
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
