#include "depth-realtime/validate.h"

#include <cmath>

namespace dr::schema {
namespace {

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::String: return "a string";
    case Kind::Id: return "an id (string of 1-128 characters or non-negative integer)";
    case Kind::Number: return "a number";
    case Kind::Integer: return "an integer";
    case Kind::Boolean: return "a boolean";
    case Kind::Object: return "an object";
    case Kind::Array: return "an array";
    case Kind::Any: return "a value";
  }
  return "a value";
}

std::string num(double v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

bool check(const json_t* v, const Field& f, std::string& why) {
  switch (f.kind) {
    case Kind::Any:
      return true;
    case Kind::Id:
      if (!id_string(v)) {
        why = std::string("must be ") + kind_name(f.kind);
        return false;
      }
      return true;
    case Kind::String: {
      if (!json_is_string(v)) {
        why = "must be a string";
        return false;
      }
      size_t len = js_length(std::string_view(json_string_value(v), json_string_length(v)));
      if (f.max > f.min || f.min > 0) {
        if (double(len) < f.min) {
          why = f.min <= 1 ? "must not be empty" : "must be at least " + num(f.min) + " characters";
          return false;
        }
        if (f.max > 0 && double(len) > f.max) {
          why = "must be at most " + num(f.max) + " characters";
          return false;
        }
      }
      if (!f.one_of.empty()) {
        for (auto& o : f.one_of)
          if (o == json_string_value(v)) return true;
        why = "must be one of";
        for (size_t i = 0; i < f.one_of.size(); i++) why += (i ? ", \"" : " \"") + f.one_of[i] + "\"";
        return false;
      }
      return true;
    }
    case Kind::Number:
    case Kind::Integer: {
      if (!json_is_number(v)) {
        why = std::string("must be ") + kind_name(f.kind);
        return false;
      }
      double d = json_number_value(v);
      if (f.kind == Kind::Integer && (json_is_real(v) && std::floor(d) != d)) {
        why = "must be an integer";
        return false;
      }
      if (f.max > f.min && (d < f.min || d > f.max)) {
        why = "must be between " + num(f.min) + " and " + num(f.max);
        return false;
      }
      return true;
    }
    case Kind::Boolean:
      if (!json_is_boolean(v)) {
        why = "must be a boolean";
        return false;
      }
      return true;
    case Kind::Object:
      if (!json_is_object(v)) {
        why = "must be an object";
        return false;
      }
      return true;
    case Kind::Array:
      if (!json_is_array(v)) {
        why = "must be an array";
        return false;
      }
      if (f.max > f.min && (double(json_array_size(v)) < f.min || double(json_array_size(v)) > f.max)) {
        why = f.min > 0 ? "must have " + num(f.min) + " to " + num(f.max) + " items"
                        : "must have at most " + num(f.max) + " items";
        return false;
      }
      return true;
  }
  return true;
}

}  // namespace

size_t js_length(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    n += len == 4 ? 2 : 1;  // outside the BMP: a surrogate pair in JavaScript
    i += len;
  }
  return n;
}

std::optional<std::string> id_string(const json_t* v) {
  if (json_is_string(v)) {
    std::string_view s(json_string_value(v), json_string_length(v));
    size_t len = js_length(s);
    if (len < 1 || len > 128) return std::nullopt;
    return std::string(s);
  }
  if (json_is_integer(v) && json_integer_value(v) >= 0) return std::to_string(json_integer_value(v));
  if (json_is_real(v)) {
    double d = json_real_value(v);
    if (d >= 0 && d <= 9007199254740991.0 && std::floor(d) == d) return std::to_string(int64_t(d));
  }
  return std::nullopt;
}

bool validate(const json_t* payload, const EventShape& e, std::string& details) {
  if (e.any_payload) return true;
  if (!json_is_object(payload)) {
    details = "payload: must be an object";
    return false;
  }
  for (auto& f : e.fields) {
    const json_t* v = json_object_get(payload, f.name.c_str());
    if (!v || json_is_null(v)) {
      if (f.required) {
        details = f.name + ": is required";
        return false;
      }
      continue;
    }
    std::string why;
    if (!check(v, f, why)) {
      details = f.name + ": " + why;
      return false;
    }
  }
  return true;
}

EventMiddleware middleware(const Table& table) {
  return [&table](Socket& s, dr::Event& ev) {
    const EventShape* e = table.find(ev.name);
    std::string details;
    if (!e) details = "event: unknown event \"" + ev.name + "\"";
    else if (validate(json_array_get(ev.args.args.get(), 0), *e, details)) return true;
    send_error(s, ev, "INVALID_DATA", "Invalid data", details);
    return false;
  };
}

}  // namespace dr::schema

