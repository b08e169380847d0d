// JSON values for modules: jansson, with an owning handle.
#pragma once

#include <jansson.h>

#include <charconv>
#include <cstdint>
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

// As jansson checks a string: UTF-8 without overlong forms, surrogates or
// code points past U+10FFFF (NUL is fine).
inline bool json_utf8_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return false;
    if (s.size() - i < len) return false;
    for (size_t k = 1; k < len; k++) {
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return false;
    if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return false;
    i += len;
  }
  return true;
}

// Appends `s` as a JSON string, the bytes jansson's dump writes for it with
// the Socket.IO encoder's flags: " \\ and controls escaped (\u00XX in
// capitals where there is no short form), nothing else (no \/, UTF-8 as it
// is). False, with nothing appended, unless jansson takes it as UTF-8.
inline bool json_append_string(std::string_view s, std::string& out) {
  if (!json_utf8_valid(s)) return false;
  static constexpr char kHex[] = "0123456789ABCDEF";
  out += '"';
  size_t plain = 0;  // the start of the run not yet appended
  for (size_t i = 0; i < s.size(); i++) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s, plain, i - plain);
    plain = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 15];
    }
  }
  out.append(s, plain);
  out += '"';
  return true;
}

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

// The bytes jansson writes for `v`, without its dump: each dump sets up a
// hash table for its loop check (allocations for every value written).
// Objects, arrays, integers and strings are written here; reals one by one
// by jansson. False: not written here (a string or key that is not UTF-8,
// nesting deeper than kMaxDepth, a value jansson refuses): the caller dumps
// the whole value instead.
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
      return json_append_string(std::string_view(json_string_value(v), json_string_length(v)), out);
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
        if (!json_append_string(std::string_view(json_object_iter_key(it), json_object_iter_key_len(it)), out))
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
