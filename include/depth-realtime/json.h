// JSON values for modules: jansson, with an owning handle.
#pragma once

#include <jansson.h>

#include <charconv>
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

namespace json_detail {

inline int append_chunk(const char* chunk, size_t size, void* out) {
  static_cast<std::string*>(out)->append(chunk, size);
  return 0;
}

// jansson's own writer for one value (its flags are the Socket.IO encoder's).
inline bool dump_into(const json_t* v, std::string& out) {
  const size_t before = out.size();
  if (json_dump_callback(v, append_chunk, &out, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17)) == 0)
    return true;
  out.resize(before);
  return false;
}

// Printable ASCII needs only " and \\ escaped; false for anything else.
inline bool append_plain_string(std::string_view s, std::string& out) {
  for (unsigned char c : s)
    if (c < 0x20 || c >= 0x80) return false;
  out.push_back('"');
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return true;
}

// The bytes jansson writes for `v`, without its dump: each dump sets up a
// hash table for its loop check (allocations for every value written).
// Objects, arrays, integers and plain strings are written here; other
// strings and reals one by one by jansson. False: not written here (a key
// that is not plain ASCII, nesting deeper than kMaxDepth, a value jansson
// refuses): the caller dumps the whole value instead.
inline bool append_fast(const json_t* v, std::string& out, int depth) {
  constexpr int kMaxDepth = 32;
  if (!v) return false;
  switch (json_typeof(v)) {
    case JSON_NULL:
      out.append("null");
      return true;
    case JSON_TRUE:
      out.append("true");
      return true;
    case JSON_FALSE:
      out.append("false");
      return true;
    case JSON_INTEGER:
    {
      char digits[24];
      const auto r = std::to_chars(digits, digits + sizeof digits, json_integer_value(v));
      out.append(digits, r.ptr);
      return true;
    }
    case JSON_REAL:
      return dump_into(v, out);
    case JSON_STRING:
      return append_plain_string(std::string_view(json_string_value(v), json_string_length(v)), out) ||
             dump_into(v, out);
    case JSON_ARRAY: {
      if (depth >= kMaxDepth) return false;
      out.push_back('[');
      for (size_t i = 0, n = json_array_size(v); i < n; i++) {
        if (i) out.push_back(',');
        if (!append_fast(json_array_get(v, i), out, depth + 1)) return false;
      }
      out.push_back(']');
      return true;
    }
    case JSON_OBJECT: {
      if (depth >= kMaxDepth) return false;
      out.push_back('{');
      // The iteration order of jansson's dump (insertion order).
      json_t* o = const_cast<json_t*>(v);
      bool first = true;
      for (void* it = json_object_iter(o); it; it = json_object_iter_next(o, it)) {
        if (!first) out.push_back(',');
        first = false;
        if (!append_plain_string(std::string_view(json_object_iter_key(it), json_object_iter_key_len(it)), out))
          return false;
        out.push_back(':');
        if (!append_fast(json_object_iter_value(it), out, depth + 1)) return false;
      }
      out.push_back('}');
      return true;
    }
  }
  return false;
}

}  // namespace json_detail

// Appends compact JSON text, as JavaScript's JSON.stringify writes it (the
// bytes jansson's dump gives with the Socket.IO encoder's flags), to `out`.
// False, and `out` as it was, when the value cannot be written (invalid UTF-8
// in a string built without checks).
inline bool json_append(const json_t* j, std::string& out) {
  const size_t before = out.size();
  if (json_detail::append_fast(j, out, 0)) return true;
  out.resize(before);
  return json_detail::dump_into(j, out);
}

// Compact JSON text (json_append's) between `before` and `after` (e.g. "["
// and "]": the args array of one value); "" when the value cannot be written
// (invalid UTF-8 in a string built without checks).
inline std::string json_text(const json_t* j, std::string_view before, std::string_view after) {
  if (!j) return std::string(before).append("null").append(after);
  // Written into a buffer that keeps its capacity, then copied once at its size.
  constexpr size_t kKeptCapacity = 64 * 1024;
  thread_local std::string scratch;
  scratch.assign(before);
  std::string out;
  if (json_append(j, scratch)) out = scratch.append(after);
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
