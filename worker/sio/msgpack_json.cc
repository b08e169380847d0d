#include "sio/msgpack_json.h"

#include <cmath>
#include <cstring>
#include <ctime>

namespace dr::cluster {
namespace {

constexpr int kMaxDepth = 64;  // deeper input is cut (null), never a stack overflow

// {"_placeholder":true,"num":N} -> N
std::optional<size_t> placeholder_num(const json_t* v) {
  if (!json_is_object(v) || !json_is_true(json_object_get(v, "_placeholder"))) return std::nullopt;
  const json_t* num = json_object_get(v, "num");
  if (!json_is_integer(num) || json_integer_value(num) < 0) return std::nullopt;
  return size_t(json_integer_value(num));
}

std::string iso8601(int64_t sec, uint32_t nsec) {
  time_t t = time_t(sec);
  struct tm tm {};
  // A timestamp beyond what a struct tm holds (year past INT_MAX) has no date:
  // the epoch's, rather than whatever was on the stack.
  if (!gmtime_r(&t, &tm)) {
    t = 0;
    gmtime_r(&t, &tm);
    nsec = 0;
  }
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec, nsec / 1000000);
  return buf;
}

uint64_t be(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | uint8_t(p[i]);
  return v;
}

Json timestamp(const msgpack_object_ext& e) {
  int64_t sec = 0;
  uint32_t nsec = 0;
  if (e.size == 4) {
    sec = int64_t(be(e.ptr, 4));
  } else if (e.size == 8) {
    uint64_t v = be(e.ptr, 8);
    nsec = uint32_t(v >> 34);
    sec = int64_t(v & 0x3ffffffffULL);
  } else if (e.size == 12) {
    nsec = uint32_t(be(e.ptr, 4));
    sec = int64_t(be(e.ptr + 4, 8));
  } else {
    return Json(json_null());
  }
  std::string s = iso8601(sec, nsec);
  return Json(json_stringn(s.data(), s.size()));
}

}  // namespace

void Packer::str(std::string_view s) {
  msgpack_pack_str(&pk_, s.size());
  msgpack_pack_str_body(&pk_, s.data(), s.size());
}

void Packer::bin(std::string_view b) {
  msgpack_pack_bin(&pk_, b.size());
  msgpack_pack_bin_body(&pk_, b.data(), b.size());
}

void Packer::str_array(const std::vector<std::string>& items) {
  array(items.size());
  for (auto& s : items) str(s);
}

void Packer::json(const json_t* v, const std::vector<std::string>& attachments, int depth) {
  if (depth > kMaxDepth) return nil();
  switch (json_typeof(v)) {
    case JSON_OBJECT: {
      if (auto n = placeholder_num(v)) {
        if (*n < attachments.size()) return bin(attachments[*n]);
        return nil();
      }
      map(json_object_size(v));
      const char* key;
      json_t* child;
      json_object_foreach(const_cast<json_t*>(v), key, child) {
        str(key);
        json(child, attachments, depth + 1);
      }
      return;
    }
    case JSON_ARRAY: {
      array(json_array_size(v));
      size_t i;
      json_t* child;
      json_array_foreach(v, i, child) json(child, attachments, depth + 1);
      return;
    }
    case JSON_STRING:
      return str({json_string_value(v), json_string_length(v)});
    case JSON_INTEGER:
      return integer(json_integer_value(v));
    case JSON_REAL: {
      // notepack writes integral numbers as integers, others as float64.
      double d = json_real_value(v);
      if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) < 9.2e18) return integer(int64_t(d));
      msgpack_pack_double(&pk_, d);
      return;
    }
    case JSON_TRUE:
      return boolean(true);
    case JSON_FALSE:
      return boolean(false);
    default:
      return nil();
  }
}

namespace {

// True when `bytes` could be exactly one msgpack value: every array/map
// element and str/bin/ext body it declares fits in the input. msgpack-c
// allocates a container's elements from its declared count before reading
// them, so an unchecked 5-byte array32 header would ask for ~100 GB.
bool plausible(std::string_view bytes) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  size_t pos = 0;
  uint64_t pending = 1;  // values still to read; each takes at least one byte
  while (pending > 0) {
    if (pos >= n || pending > n - pos) return false;
    const uint8_t t = p[pos++];
    uint64_t body = 0, children = 0;
    auto len = [&](int width) -> bool {  // a big-endian length field
      if (n - pos < size_t(width)) return false;
      body = be(bytes.data() + pos, width);
      pos += size_t(width);
      return true;
    };
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
      // fixint, nil, false, true
    } else if (t >= 0x80 && t <= 0x8f) {
      children = 2 * uint64_t(t & 0x0f);
    } else if (t >= 0x90 && t <= 0x9f) {
      children = t & 0x0f;
    } else if (t >= 0xa0 && t <= 0xbf) {
      body = t & 0x1f;
    } else {
      switch (t) {
        case 0xc4: case 0xd9: if (!len(1)) return false; break;  // bin8, str8
        case 0xc5: case 0xda: if (!len(2)) return false; break;  // bin16, str16
        case 0xc6: case 0xdb: if (!len(4)) return false; break;  // bin32, str32
        case 0xc7: if (!len(1)) return false; body += 1; break;  // ext8 (+ type)
        case 0xc8: if (!len(2)) return false; body += 1; break;  // ext16
        case 0xc9: if (!len(4)) return false; body += 1; break;  // ext32
        case 0xca: case 0xd2: case 0xce: body = 4; break;        // float32, int32, uint32
        case 0xcb: case 0xd3: case 0xcf: body = 8; break;        // float64, int64, uint64
        case 0xcc: case 0xd0: body = 1; break;                   // uint8, int8
        case 0xcd: case 0xd1: body = 2; break;                   // uint16, int16
        case 0xd4: body = 2; break;                              // fixext1 (+ type)
        case 0xd5: body = 3; break;
        case 0xd6: body = 5; break;
        case 0xd7: body = 9; break;
        case 0xd8: body = 17; break;
        case 0xdc: if (!len(2)) return false; children = body; body = 0; break;      // array16
        case 0xdd: if (!len(4)) return false; children = body; body = 0; break;      // array32
        case 0xde: if (!len(2)) return false; children = 2 * body; body = 0; break;  // map16
        case 0xdf: if (!len(4)) return false; children = 2 * body; body = 0; break;  // map32
        default: return false;  // 0xc1: never used
      }
    }
    if (body > n - pos) return false;
    pos += size_t(body);
    pending = pending - 1 + children;
  }
  return pos == n;
}

}  // namespace

bool Unpacked::parse(std::string_view bytes) {
  if (!plausible(bytes)) return false;
  size_t off = 0;
  return msgpack_unpack_next(&u_, bytes.data(), bytes.size(), &off) == MSGPACK_UNPACK_SUCCESS && off == bytes.size();
}

const msgpack_object* map_get(const msgpack_object& map, std::string_view key) {
  if (map.type != MSGPACK_OBJECT_MAP) return nullptr;
  for (uint32_t i = 0; i < map.via.map.size; i++) {
    const msgpack_object& k = map.via.map.ptr[i].key;
    if (k.type == MSGPACK_OBJECT_STR && std::string_view(k.via.str.ptr, k.via.str.size) == key)
      return &map.via.map.ptr[i].val;
  }
  return nullptr;
}

std::optional<std::string_view> as_str(const msgpack_object* o) {
  if (!o || o->type != MSGPACK_OBJECT_STR) return std::nullopt;
  return std::string_view(o->via.str.ptr, o->via.str.size);
}

std::optional<int64_t> as_int(const msgpack_object* o) {
  if (!o) return std::nullopt;
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) return int64_t(o->via.u64);
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) return o->via.i64;
  // Whole and within int64 (converting 1e300 or inf is undefined behaviour).
  if ((o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32) && std::trunc(o->via.f64) == o->via.f64 &&
      o->via.f64 >= -0x1p63 && o->via.f64 < 0x1p63)
    return int64_t(o->via.f64);
  return std::nullopt;
}

bool as_true(const msgpack_object* o) { return o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean; }

std::vector<std::string> as_rooms(const msgpack_object* o) {
  std::vector<std::string> out;
  if (!o || o->type != MSGPACK_OBJECT_ARRAY) return out;
  for (uint32_t i = 0; i < o->via.array.size; i++) {
    const msgpack_object* r = &o->via.array.ptr[i];
    if (auto s = as_str(r)) out.emplace_back(*s);
    else if (auto n = as_int(r)) out.push_back(std::to_string(*n));
  }
  return out;
}

Json to_json(const msgpack_object& o, std::vector<std::string>& attachments, int depth) {
  if (depth > kMaxDepth) return Json(json_null());
  switch (o.type) {
    case MSGPACK_OBJECT_BOOLEAN:
      return Json(json_boolean(o.via.boolean));
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
      if (o.via.u64 > uint64_t(INT64_MAX)) return Json(json_real(double(o.via.u64)));
      return Json(json_integer(json_int_t(o.via.u64)));
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
      return Json(json_integer(json_int_t(o.via.i64)));
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
      if (!std::isfinite(o.via.f64)) return Json(json_null());  // as JSON.stringify writes NaN
      return Json(json_real(o.via.f64));
    case MSGPACK_OBJECT_STR: {
      json_t* s = json_stringn(o.via.str.ptr, o.via.str.size);  // null when not UTF-8
      return Json(s ? s : json_null());
    }
    case MSGPACK_OBJECT_BIN: {
      Json ph(json_object());
      json_object_set_new(ph.get(), "_placeholder", json_true());
      json_object_set_new(ph.get(), "num", json_integer(json_int_t(attachments.size())));
      attachments.emplace_back(o.via.bin.ptr, o.via.bin.size);
      return ph;
    }
    case MSGPACK_OBJECT_ARRAY: {
      Json arr(json_array());
      for (uint32_t i = 0; i < o.via.array.size; i++)
        json_array_append_new(arr.get(), to_json(o.via.array.ptr[i], attachments, depth + 1).release());
      return arr;
    }
    case MSGPACK_OBJECT_MAP: {
      Json obj(json_object());
      for (uint32_t i = 0; i < o.via.map.size; i++) {
        const msgpack_object& k = o.via.map.ptr[i].key;
        std::string key;
        if (k.type == MSGPACK_OBJECT_STR) key.assign(k.via.str.ptr, k.via.str.size);
        else if (auto n = as_int(&k)) key = std::to_string(*n);
        else continue;
        json_object_setn_new(obj.get(), key.data(), key.size(),
                             to_json(o.via.map.ptr[i].val, attachments, depth + 1).release());
      }
      return obj;
    }
    case MSGPACK_OBJECT_EXT:
      if (o.via.ext.type == -1) return timestamp(o.via.ext);
      return Json(json_null());
    default:
      return Json(json_null());
  }
}

Json decode_body(std::string_view body, std::vector<std::string>& attachments) {
  if (!body.empty() && body[0] == '{') return json_parse(body);
  Unpacked u;
  if (!u.parse(body)) return nullptr;
  return to_json(u.root(), attachments);
}

}  // namespace dr::cluster
