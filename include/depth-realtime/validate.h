// Payload validation for modules: each module declares its events' payload
// shapes in one table, and nothing reaches a handler unvalidated.
//
//   static const dr::schema::Table chat = {
//       {"chat:join", {{"conversationId", dr::schema::Kind::Id, true}}},
//       {"chat:message", {{"conversationId", Kind::Id, true},
//                         {"content", Kind::String, true, 1, 10000},
//                         {"type", Kind::String, false, 0, 0, {"text", "image", "file"}}}},
//   };
//   w.use_event("/chat", dr::schema::middleware(chat));
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "depth-realtime/export.h"
#include "depth-realtime/module.h"

namespace dr::schema {

enum class Kind {
  String,   // a string; min/max bound its length (JavaScript length: UTF-16 units)
  Id,       // a string of 1-128 units or a non-negative integer (see id_string)
  Number,   // min/max bound the value when max > min
  Integer,  // a whole number; min/max likewise
  Boolean,
  Object,
  Array,    // min/max bound the item count when max > min
  Any,
};

struct DR_API Field {
  std::string name;
  Kind kind = Kind::Any;
  bool required = false;
  double min = 0, max = 0;           // see Kind; min == max == 0: no bound
  std::vector<std::string> one_of;   // allowed strings, empty: any

  Field(std::string n, Kind k, bool req = false, double lo = 0, double hi = 0, std::vector<std::string> values = {})
      : name(std::move(n)), kind(k), required(req), min(lo), max(hi), one_of(std::move(values)) {}
};

struct DR_API EventShape {
  std::string name;
  std::vector<Field> fields;  // of the first argument, which must be an object
  bool any_payload = false;   // no object required (e.g. events without data)
};

class DR_API Table {
 public:
  Table(std::initializer_list<EventShape> events) : events_(events) {}
  const EventShape* find(std::string_view name) const {
    for (auto& e : events_)
      if (e.name == name) return &e;
    return nullptr;
  }
  const std::vector<EventShape>& events() const { return events_; }

 private:
  std::vector<EventShape> events_;
};

// Checks `payload` against `e`. Unknown extra fields are ignored; JSON null in
// an optional field counts as absent. On failure `details` reads "<field>: <why>".
DR_API bool validate(const json_t* payload, const EventShape& e, std::string& details);

// An id as the contract wants it: a non-empty string of at most 128 units, or a
// non-negative integer as its decimal text.
DR_API std::optional<std::string> id_string(const json_t* v);

// JavaScript's String.length of UTF-8 text (UTF-16 code units).
DR_API size_t js_length(std::string_view utf8);

// Middleware that validates every event of a namespace against `table`: an
// unknown event or a bad payload is dropped and answered with INVALID_DATA
// (through the ack when there is one, otherwise an `error` event). `table`
// must outlive the worker (a static).
DR_API EventMiddleware middleware(const Table& table);

}  // namespace dr::schema

