// JSON values for modules: jansson, with an owning handle.
#pragma once

#include <jansson.h>

#include <memory>
#include <string>
#include <string_view>

#include "depth-realtime/export.h"

namespace dr {

struct DR_API JsonDeleter {
  void operator()(json_t* j) const { json_decref(j); }
};
// Owns one reference.
using Json = std::unique_ptr<json_t, JsonDeleter>;

// Takes a new reference to a borrowed value.
inline Json json_share(json_t* j) { return Json(json_incref(j)); }

// Compact JSON text, as JavaScript's JSON.stringify writes it.
inline std::string json_text(const json_t* j) {
  std::string out;
  if (!j) return "null";
  char* s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
  if (s) {
    out = s;
    free(s);
  }
  return out;
}

// Parses any JSON value; null on error.
inline Json json_parse(std::string_view text) {
  return Json(json_loadb(text.data(), text.size(), JSON_DECODE_ANY | JSON_ALLOW_NUL, nullptr));
}

// String field of an object, or nullptr.
inline const char* json_str(const json_t* obj, const char* key) {
  return json_string_value(json_object_get(obj, key));
}

}  // namespace dr
