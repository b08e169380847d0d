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

// Compact JSON text, as JavaScript's JSON.stringify writes it, between
// `before` and `after` (e.g. "[" and "]": the args array of one value); ""
// when the value cannot be written (invalid UTF-8 in a string built without
// checks).
inline std::string json_text(const json_t* j, std::string_view before, std::string_view after) {
  if (!j) return std::string(before).append("null").append(after);
  // Streamed into a buffer that keeps its capacity, then copied once at its
  // size (json_dumps builds its own buffer, then a copy of it, then ours).
  constexpr size_t kKeptCapacity = 64 * 1024;
  thread_local std::string scratch;
  scratch.assign(before);
  auto append = [](const char* chunk, size_t size, void* out) {
    static_cast<std::string*>(out)->append(chunk, size);
    return 0;
  };
  std::string out;
  if (json_dump_callback(j, append, &scratch, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17)) == 0)
    out = scratch.append(after);
  if (scratch.capacity() > kKeptCapacity) std::string().swap(scratch);
  return out;
}
inline std::string json_text(const json_t* j) { return json_text(j, {}, {}); }

// Parses any JSON value; null on error.
inline Json json_parse(std::string_view text) {
  return Json(json_loadb(text.data(), text.size(), JSON_DECODE_ANY | JSON_ALLOW_NUL, nullptr));
}

// String field of an object, or nullptr.
inline const char* json_str(const json_t* obj, const char* key) {
  return json_string_value(json_object_get(obj, key));
}

}  // namespace dr
