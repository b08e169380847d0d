#include "sio/msgpack_packet.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <unordered_map>
#include <vector>

#include "sio/msgpack_json.h"

namespace dr::sio {

using cluster::Packer;
using cluster::Unpacked;

std::string encode_msgpack(const Packet& p) {
  PacketType type = p.type;  // no binary types here: binaries travel inside `data`
  if (type == PacketType::BinaryEvent) type = PacketType::Event;
  if (type == PacketType::BinaryAck) type = PacketType::Ack;
  const bool has_data = p.data && !json_is_null(p.data.get());
  Packer pk;
  pk.map(2 + (has_data ? 1 : 0) + (p.id ? 1 : 0));
  // The members in the order a Node server writes them (an ack starts with
  // its id), so that the bytes are the same as socket.io's.
  if (p.id && type == PacketType::Ack) {
    pk.str("id");
    pk.integer(int64_t(*p.id));
  }
  pk.str("type");
  pk.integer(int64_t(type));
  if (has_data) {
    pk.str("data");
    pk.json(p.data.get(), p.attachments);
  }
  if (p.id && type != PacketType::Ack) {
    pk.str("id");
    pk.integer(int64_t(*p.id));
  }
  pk.str("nsp");
  pk.str(p.nsp);
  return std::move(pk.out());
}

namespace {

// Date.prototype.toJSON of a time in milliseconds since the epoch; null
// beyond the range of a JavaScript Date.
Json iso_date(int64_t ms) {
  constexpr int64_t kMaxDateMs = 8'640'000'000'000'000;
  if (ms > kMaxDateMs || ms < -kMaxDateMs) return Json(json_null());
  int64_t sec = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);  // floor
  const int millis = int(ms - sec * 1000);
  time_t t = time_t(sec);
  struct tm tm {};
  if (!gmtime_r(&t, &tm)) return Json(json_null());
  const long year = long(tm.tm_year) + 1900;
  char buf[48];
  // Years outside 0..9999 take six digits and a sign, as in JavaScript.
  if (year >= 0 && year <= 9999)
    snprintf(buf, sizeof buf, "%04ld-%02d-%02dT%02d:%02d:%02d.%03dZ", year, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, millis);
  else
    snprintf(buf, sizeof buf, "%c%06ld-%02d-%02dT%02d:%02d:%02d.%03dZ", year < 0 ? '-' : '+', std::labs(year),
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
  return Json(json_string(buf));
}

int64_t be64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | uint8_t(p[i]);
  return int64_t(v);
}

Json placeholder(std::vector<std::string>& attachments, const char* ptr, size_t size) {
  Json ph(json_object());
  json_object_set_new(ph.get(), "_placeholder", json_true());
  json_object_set_new(ph.get(), "num", json_integer(json_int_t(attachments.size())));
  attachments.emplace_back(ptr, size);
  return ph;
}

// msgpack-c's parser reads at most this many nested containers (the packet's
// map included): what the encoder writes must stay within it to be read back.
constexpr int kMaxNesting = 32;
// Each binary costs a placeholder object here: a message of 2-byte empty
// bins must not become hundreds of thousands of them (the text parser's
// limit is 10 attachments; msgpack clients inline binaries more freely).
constexpr size_t kMaxBinaries = 1000;

// msgpack -> the JSON + attachments form. Null (with `err`) when the value is
// refused; `undefined` is set for notepack's `undefined`. `depth`: the
// containers around `o`; msgpack-c's parser bounds it, so the recursion too.
class Reader {
 public:
  Reader(std::vector<std::string>& attachments, std::string& err) : attachments_(attachments), err_(err) {}

  Json value(const msgpack_object& o, bool& undefined, int depth) {
    undefined = false;
    switch (o.type) {
      case MSGPACK_OBJECT_NIL:
        return Json(json_null());
      case MSGPACK_OBJECT_STR: {
        json_t* s = json_stringn(o.via.str.ptr, o.via.str.size);
        if (!s) return fail("a string is not UTF-8");
        return Json(s);
      }
      case MSGPACK_OBJECT_BIN:
        if (attachments_.size() >= kMaxBinaries) return fail("too many binaries");
        return placeholder(attachments_, o.via.bin.ptr, o.via.bin.size);
      case MSGPACK_OBJECT_EXT:
        return ext(o.via.ext, undefined, depth);
      case MSGPACK_OBJECT_ARRAY: {
        Json arr(json_array());
        for (uint32_t i = 0; i < o.via.array.size; i++) {
          bool undef;
          Json v = value(o.via.array.ptr[i], undef, depth + 1);
          if (!v) return v;
          json_array_append_new(arr.get(), v.release());  // undefined is null here, as in JSON
        }
        return arr;
      }
      case MSGPACK_OBJECT_MAP:
        return map(o, depth);
      case MSGPACK_OBJECT_FLOAT32:
      case MSGPACK_OBJECT_FLOAT64:
        // JavaScript has one number type: 2.0 is 2, as the text parser reads "2".
        if (std::trunc(o.via.f64) == o.via.f64 && o.via.f64 >= -0x1p63 && o.via.f64 < 0x1p63)
          return Json(json_integer(json_int_t(o.via.f64)));
        [[fallthrough]];
      default: {  // booleans and numbers, as the Redis adapter reads them
        std::vector<std::string> none;
        return cluster::to_json(o, none);
      }
    }
  }

 private:
  Json fail(const char* why) {
    err_ = why;
    return nullptr;
  }

  Json map(const msgpack_object& o, int depth) {
    // The keys first: a repeated key counts last, as in a JavaScript object,
    // and only that value is read (an earlier one's binaries would be orphans).
    const uint32_t n = o.via.map.size;
    std::vector<std::string> keys(n);
    std::unordered_map<std::string_view, uint32_t> last;
    last.reserve(n);
    for (uint32_t i = 0; i < n; i++) {
      const msgpack_object& k = o.via.map.ptr[i].key;
      if (k.type == MSGPACK_OBJECT_STR) keys[i].assign(k.via.str.ptr, k.via.str.size);
      else if (auto v = cluster::as_int(&k)) keys[i] = std::to_string(*v);  // JavaScript keys numbers by their text
      else return fail("a map key is neither a string nor an integer");
      // Keys are C strings to jansson's iterators (and JSON text refuses \u0000 in them).
      if (keys[i].find('\0') != std::string::npos) return fail("a map key holds a NUL");
    }
    for (uint32_t i = 0; i < n; i++) last[keys[i]] = i;
    Json obj(json_object());
    for (uint32_t i = 0; i < n; i++) {
      if (last[keys[i]] != i) continue;
      bool undef;
      Json v = value(o.via.map.ptr[i].val, undef, depth + 1);
      if (!v) return v;
      if (undef) continue;  // as JSON.stringify drops an undefined member
      if (json_object_setn_new(obj.get(), keys[i].data(), keys[i].size(), v.release()) != 0)
        return fail("a map key is not UTF-8");
    }
    if (json_is_true(json_object_get(obj.get(), "_placeholder")))
      return fail("a map shaped like a binary placeholder");
    return obj;
  }

  // notepack.io's ext type 0 is three things, told apart by the encoding:
  // fixext 1 is undefined, fixext 8 a Date, ext 8/16/32 an ArrayBuffer.
  // msgpack-c reads the ext in place in the message (ptr[-1] is its type
  // byte), so the byte before that is the fixext's own marker, or the last
  // byte of an ext 8/16/32 length, which a fixext's size never equals.
  Json ext(const msgpack_object_ext& e, bool& undefined, int depth) {
    const auto marker = e.size == 1 || e.size == 8 ? uint8_t(e.ptr[-2]) : 0;
    if (e.type == 0 && e.size == 1 && marker == 0xd4) {
      undefined = true;
      return Json(json_null());
    }
    if (e.type == 0 && e.size == 8 && marker == 0xd7) return iso_date(be64(e.ptr));
    if (attachments_.size() >= kMaxBinaries) return fail("too many binaries");
    if (e.type == 0) return placeholder(attachments_, e.ptr, e.size);
    // [type, Buffer], as notepack.io decodes an unknown ext: one level more.
    if (depth + 1 > kMaxNesting) return fail("nested too deep");
    Json pair(json_array());
    json_array_append_new(pair.get(), json_integer(e.type));
    json_array_append_new(pair.get(), placeholder(attachments_, e.ptr, e.size).release());
    return pair;
  }

  std::vector<std::string>& attachments_;
  std::string& err_;
};

}  // namespace

bool decode_msgpack(std::string_view bytes, Packet& out, std::string& err) {
  Unpacked u;
  if (!u.parse(bytes)) {
    err = "not one msgpack value";
    return false;
  }
  const msgpack_object& root = u.root();
  if (root.type != MSGPACK_OBJECT_MAP) {
    err = "not a msgpack map";
    return false;
  }
  // The members the packet has; others (socket.io-client adds "options") are
  // ignored. A repeated key counts last, as in a JavaScript object.
  const msgpack_object *type = nullptr, *nsp = nullptr, *data = nullptr, *id = nullptr;
  for (uint32_t i = 0; i < root.via.map.size; i++) {
    const auto k = cluster::as_str(&root.via.map.ptr[i].key);
    const msgpack_object* v = &root.via.map.ptr[i].val;
    if (k == "type") type = v;
    else if (k == "nsp") nsp = v;
    else if (k == "data") data = v;
    else if (k == "id") id = v;
  }
  const auto t = cluster::as_int(type);
  if (!t || *t < 0 || *t > int64_t(PacketType::ConnectError)) {
    err = "invalid packet type";
    return false;
  }
  const auto name = cluster::as_str(nsp);
  if (!name) {
    err = "invalid namespace";
    return false;
  }
  Packet p;
  p.type = static_cast<PacketType>(*t);
  p.nsp.assign(*name);
  Reader reader(p.attachments, err);
  if (data) {
    bool undefined;
    p.data = reader.value(*data, undefined, 1);
    if (!p.data) return false;
    if (undefined) p.data = nullptr;  // as if absent
  }
  if (!payload_valid(p.type, p.data.get())) {
    err = "invalid payload";
    return false;
  }
  // An id is an integer, or notepack's undefined; ours are never negative.
  const bool undefined_id = id && id->type == MSGPACK_OBJECT_EXT && id->via.ext.type == 0 && id->via.ext.size == 1 &&
                            uint8_t(id->via.ext.ptr[-2]) == 0xd4;
  if (id && !undefined_id) {
    const auto n = cluster::as_int(id);
    if (!n || *n < 0) {
      err = "invalid packet id";
      return false;
    }
    p.id = uint64_t(*n);
  }
  out = std::move(p);
  return true;
}

}  // namespace dr::sio
