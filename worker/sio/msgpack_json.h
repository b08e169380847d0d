// msgpack (msgpack-c, the C API) as @socket.io/redis-adapter writes it with
// notepack.io, and its conversion to and from the JSON + attachments form the
// Socket.IO side uses: binary values are msgpack `bin` items on Redis and
// {"_placeholder":true,"num":N} placeholders with attachments[N] here.
#pragma once

#include <msgpack.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "depth-realtime/json.h"

namespace dr::cluster {

// A msgpack writer appending to a string.
class Packer {
 public:
  Packer() { msgpack_packer_init(&pk_, &out_, &Packer::write); }
  Packer(const Packer&) = delete;
  Packer& operator=(const Packer&) = delete;

  void array(size_t n) { msgpack_pack_array(&pk_, n); }
  void map(size_t n) { msgpack_pack_map(&pk_, n); }
  void str(std::string_view s);
  void bin(std::string_view b);
  void integer(int64_t v) { msgpack_pack_int64(&pk_, v); }
  void boolean(bool v) { v ? msgpack_pack_true(&pk_) : msgpack_pack_false(&pk_); }
  void nil() { msgpack_pack_nil(&pk_); }
  void str_array(const std::vector<std::string>& items);
  // A JSON value; placeholders become `bin` items taken from `attachments`.
  void json(const json_t* v, const std::vector<std::string>& attachments, int depth = 0);

  std::string& out() { return out_; }

 private:
  static int write(void* data, const char* buf, size_t len) {
    static_cast<std::string*>(data)->append(buf, len);
    return 0;
  }
  std::string out_;
  msgpack_packer pk_;
};

// One decoded msgpack value and the zone that owns it.
class Unpacked {
 public:
  Unpacked() { msgpack_unpacked_init(&u_); }
  ~Unpacked() { msgpack_unpacked_destroy(&u_); }
  Unpacked(const Unpacked&) = delete;
  Unpacked& operator=(const Unpacked&) = delete;

  // The whole buffer must be exactly one value.
  bool parse(std::string_view bytes);
  const msgpack_object& root() const { return u_.data; }

 private:
  msgpack_unpacked u_;
};

// Helpers over decoded values (null/nullopt when absent or of another type).
const msgpack_object* map_get(const msgpack_object& map, std::string_view key);
std::optional<std::string_view> as_str(const msgpack_object* o);
std::optional<int64_t> as_int(const msgpack_object* o);
bool as_true(const msgpack_object* o);
// Room lists: strings, and numbers as their decimal text (a JavaScript app may
// use numeric room names).
std::vector<std::string> as_rooms(const msgpack_object* o);

// msgpack -> JSON; `bin` items become placeholders appended to `attachments`.
// Timestamps (ext -1) become ISO 8601 strings, as JSON.stringify writes a Date.
Json to_json(const msgpack_object& o, std::vector<std::string>& attachments, int depth = 0);

// Same, for JSON-or-msgpack bodies (the adapter's rule: JSON when it starts with '{').
Json decode_body(std::string_view body, std::vector<std::string>& attachments);

}  // namespace dr::cluster
