#include "core/json.h"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>
#include <cstdio>

namespace unidesk::core {

std::optional<std::string> CheckJsonObject(std::string_view text) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
  if (doc.HasParseError()) {
    return std::string("invalid JSON at byte ") + std::to_string(doc.GetErrorOffset()) + ": " +
           rapidjson::GetParseError_En(doc.GetParseError());
  }
  if (!doc.IsObject()) return std::string("JSON must be an object");
  return std::nullopt;
}

std::string JsonQuote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
  return out;
}

void JsonObject::Key(std::string_view key) {
  if (out_.size() > 1) out_.push_back(',');
  out_ += JsonQuote(key);
  out_.push_back(':');
}

JsonObject& JsonObject::Str(std::string_view key, std::string_view value) {
  Key(key);
  out_ += JsonQuote(value);
  return *this;
}

JsonObject& JsonObject::Int(std::string_view key, std::int64_t value) {
  Key(key);
  out_ += std::to_string(value);
  return *this;
}

JsonObject& JsonObject::Num(std::string_view key, double value) {
  Key(key);
  if (!std::isfinite(value)) {
    out_ += "null";
  } else {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", value);
    out_ += buf;
  }
  return *this;
}

JsonObject& JsonObject::Bool(std::string_view key, bool value) {
  Key(key);
  out_ += value ? "true" : "false";
  return *this;
}

JsonObject& JsonObject::Raw(std::string_view key, std::string_view json) {
  Key(key);
  out_ += json;
  return *this;
}

std::string MergeJsonObjects(std::string_view base, std::string_view overrides) {
  rapidjson::Document out;
  out.Parse(base.data(), base.size());
  if (out.HasParseError() || !out.IsObject()) out.SetObject();
  rapidjson::Document over;
  over.Parse(overrides.data(), overrides.size());
  if (!over.HasParseError() && over.IsObject()) {
    for (auto it = over.MemberBegin(); it != over.MemberEnd(); ++it) {
      rapidjson::Value v(it->value, out.GetAllocator());
      auto existing = out.FindMember(it->name);
      if (existing != out.MemberEnd()) {
        existing->value = v;
      } else {
        out.AddMember(rapidjson::Value(it->name, out.GetAllocator()), v, out.GetAllocator());
      }
    }
  }
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  out.Accept(w);
  return {buf.GetString(), buf.GetSize()};
}

struct JsonReader::Doc {
  rapidjson::Document d;
  const rapidjson::Value* Find(std::string_view key) const {
    if (!d.IsObject()) return nullptr;
    auto it = d.FindMember(rapidjson::Value(key.data(), static_cast<unsigned>(key.size())));
    return it == d.MemberEnd() ? nullptr : &it->value;
  }
};

JsonReader::JsonReader(std::string_view json) : doc_(std::make_unique<Doc>()) {
  doc_->d.Parse(json.data(), json.size());
}

JsonReader::~JsonReader() = default;

std::optional<std::string> JsonReader::Str(std::string_view key) const {
  const rapidjson::Value* v = doc_->Find(key);
  if (!v || !v->IsString()) return std::nullopt;
  return std::string(v->GetString(), v->GetStringLength());
}

std::optional<std::int64_t> JsonReader::Int(std::string_view key) const {
  const rapidjson::Value* v = doc_->Find(key);
  if (!v || !v->IsInt64()) return std::nullopt;
  return v->GetInt64();
}

std::optional<bool> JsonReader::Bool(std::string_view key) const {
  const rapidjson::Value* v = doc_->Find(key);
  if (!v || !v->IsBool()) return std::nullopt;
  return v->GetBool();
}

std::optional<std::string> JsonReader::Raw(std::string_view key) const {
  const rapidjson::Value* v = doc_->Find(key);
  if (!v) return std::nullopt;
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  v->Accept(w);
  return std::string(buf.GetString(), buf.GetSize());
}

}  // namespace unidesk::core
