#include "sio/sio_packet.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace dr::sio {

namespace {

int hex4(std::string_view s, size_t at) {
  if (at + 4 > s.size()) return -1;
  int v = 0;
  for (size_t k = at; k < at + 4; k++) {
    char c = s[k];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

}  // namespace

// Rewrites \uD800-\uDFFF escapes that are not part of a valid pair as
// \uFFFD. Returns false when there was none (the text is bad for another reason).
bool replace_lone_surrogates(std::string_view in, std::string& out) {
  bool changed = false;
  out.clear();
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); i++) {
    if (in[i] != '\\' || i + 1 >= in.size()) {
      out.push_back(in[i]);
      continue;
    }
    if (in[i + 1] != 'u') {  // another escape: copy both characters
      out.push_back(in[i]);
      out.push_back(in[++i]);
      continue;
    }
    int v = hex4(in, i + 2);
    if (v >= 0xD800 && v <= 0xDBFF) {
      int low = i + 7 < in.size() && in[i + 6] == '\\' && in[i + 7] == 'u' ? hex4(in, i + 8) : -1;
      if (low >= 0xDC00 && low <= 0xDFFF) {  // a valid pair: keep it
        out.append(in.substr(i, 12));
        i += 11;
        continue;
      }
    }
    if (v >= 0xD800 && v <= 0xDFFF) {
      out.append("\\ufffd");
      changed = true;
      i += 5;
      continue;
    }
    out.push_back(in[i]);
  }
  return changed;
}

namespace {

// More digits than this in an ack id is garbage (UINT64_MAX has 20).
constexpr size_t kMaxIdDigits = 20;
// Attachment counts stop accumulating above this (far past any sane limit).
constexpr size_t kMaxCount = 1'000'000'000;
// Don't trust a large declared count with memory before the data arrives.
constexpr size_t kMaxReserve = 16;

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_binary_type(PacketType t) {
  return t == PacketType::BinaryEvent || t == PacketType::BinaryAck;
}

void append_number(uint64_t v, std::string& out) {
  char buf[20];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

}  // namespace

// The checks socket.io-parser's isPayloadValid() makes, except that types
// which need data here also reject its absence (Node lets "42" through with
// undefined data; no client sends that).
bool payload_valid(PacketType type, const json_t* data) {
  switch (type) {
    case PacketType::Connect:
      return !data || json_is_object(data);
    case PacketType::Disconnect:
      return !data;
    case PacketType::Event:
    case PacketType::BinaryEvent: {
      if (!json_is_array(data) || json_array_size(data) == 0) return false;
      const json_t* name = json_array_get(data, 0);
      if (json_is_number(name)) return true;
      return json_is_string(name) &&
             !is_reserved_event({json_string_value(name), json_string_length(name)});
    }
    case PacketType::Ack:
    case PacketType::BinaryAck:
      return json_is_array(data);
    case PacketType::ConnectError:
      return json_is_string(data) || json_is_object(data);
  }
  return false;
}

namespace {

// After a parse that read every number as a double: the whole ones that fit
// an int64 were integers in the text (JSON.stringify never writes 1.0).
// Returns the integer to put in place of `v`, or null to keep it (and walks
// into containers).
json_t* restore_integers(json_t* v) {
  if (json_is_real(v)) {
    double d = json_real_value(v);
    return d == std::trunc(d) && d >= -9.2e18 && d <= 9.2e18 ? json_integer(json_int_t(d)) : nullptr;
  }
  size_t i;
  const char* key;
  json_t* child;
  if (json_is_array(v)) {
    json_array_foreach(v, i, child) if (json_t* n = restore_integers(child)) json_array_set_new(v, i, n);
  } else if (json_is_object(v)) {
    json_object_foreach(v, key, child) if (json_t* n = restore_integers(child)) json_object_set_new(v, key, n);
  }
  return nullptr;
}

// Every object whose "_placeholder" is true must have an integer "num" in
// [0, n). Like the JS reconstructor, a placeholder's own members are not
// searched. Recursion depth is bounded by jansson's parser depth limit.
bool placeholders_valid(json_t* v, size_t n) {
  if (json_is_array(v)) {
    const size_t size = json_array_size(v);
    for (size_t i = 0; i < size; ++i) {
      if (!placeholders_valid(json_array_get(v, i), n)) return false;
    }
    return true;
  }
  if (!json_is_object(v)) return true;
  if (json_is_true(json_object_get(v, "_placeholder"))) {
    const json_t* num = json_object_get(v, "num");
    if (!json_is_integer(num)) return false;
    const json_int_t k = json_integer_value(num);
    return k >= 0 && static_cast<uint64_t>(k) < n;
  }
  const char* key;
  json_t* member;
  json_object_foreach(v, key, member) {
    if (!placeholders_valid(member, n)) return false;
  }
  return true;
}

}  // namespace

bool is_reserved_event(std::string_view name) {
  return name == "connect" || name == "connect_error" || name == "disconnect" ||
         name == "disconnecting" || name == "newListener" || name == "removeListener";
}

namespace {

// Everything before the data: type, attachment count, namespace, ack id.
void encode_head_to(const Packet& p, std::string& out) {
  // Binary-ness follows the attachments, so callers can't produce a 5/6
  // with a zero count (which our decoder, per the spec, rejects).
  const bool can_carry = p.type == PacketType::Event || p.type == PacketType::Ack ||
                         is_binary_type(p.type);
  const bool binary = can_carry && !p.attachments.empty();
  PacketType type = p.type;
  if (type == PacketType::Event && binary) type = PacketType::BinaryEvent;
  if (type == PacketType::Ack && binary) type = PacketType::BinaryAck;
  if (type == PacketType::BinaryEvent && !binary) type = PacketType::Event;
  if (type == PacketType::BinaryAck && !binary) type = PacketType::Ack;

  out.push_back(static_cast<char>('0' + static_cast<int>(type)));
  if (binary) {
    append_number(p.attachments.size(), out);
    out.push_back('-');
  }
  if (!p.nsp.empty() && p.nsp != "/") {
    out.append(p.nsp);
    out.push_back(',');
  }
  if (p.id) append_number(*p.id, out);
}

// False (and nothing left of it in `out`) when `v` cannot be written: only
// on invalid UTF-8 in a string built without checks.
bool append_json(const json_t* v, std::string& out) { return json_append(v, out); }

}  // namespace

void encode_to(const Packet& p, std::string& out) {
  encode_head_to(p, out);
  // JS writes data unless it is null/undefined; data that cannot be written
  // is dropped rather than sent as broken JSON.
  if (p.data && !json_is_null(p.data.get())) append_json(p.data.get(), out);
}

std::string encode_with_data(const Packet& p, std::string_view data_text, std::string_view prefix) {
  std::string out;
  out.reserve(prefix.size() + 24 + p.nsp.size() + data_text.size());  // type, count, ack id: fewer than 24
  out.append(prefix);
  encode_head_to(p, out);
  out.append(data_text);
  return out;
}

std::string encode_event(const Packet& p, const json_t* name, std::string_view args_text, const json_t* offset,
                         std::string_view prefix) {
  if (args_text.size() < 2 || args_text.front() != '[' || args_text.back() != ']') return encode(p, prefix);
  const std::string_view args = args_text.substr(1, args_text.size() - 2);  // the elements, without [ ]
  std::string out;
  // The name and offset are short: a little room for them and their quotes.
  out.reserve(prefix.size() + 24 + p.nsp.size() + args.size() + 2 * json_string_length(name) +
              (offset ? json_string_length(offset) : 0) + 16);
  out.append(prefix);
  encode_head_to(p, out);
  out.push_back('[');
  // What the whole array would give when a part cannot be written: no data.
  if (!append_json(name, out)) return encode(p, prefix);
  if (!args.empty()) {
    out.push_back(',');
    out.append(args);
  }
  if (offset) {
    out.push_back(',');
    if (!append_json(offset, out)) return encode(p, prefix);
  }
  out.push_back(']');
  return out;
}

std::string encode(const Packet& p, std::string_view prefix) {
  // Written into a buffer that keeps its capacity, then copied once at its
  // exact size: appended to token by token, the text would reallocate as it
  // grows. The worker is single-threaded; thread_local keeps tests honest.
  constexpr size_t kKeptCapacity = 64 * 1024;  // a larger one (a big packet) is not kept
  thread_local std::string scratch;
  scratch.assign(prefix);
  encode_to(p, scratch);
  std::string out(scratch);
  if (scratch.capacity() > kKeptCapacity) std::string().swap(scratch);
  return out;
}

Decoder::Result Decoder::add_text(std::string_view s, Packet& out, std::string& err) {
  if (pending_) {
    pending_.reset();
    expected_ = 0;
    err = "text message while awaiting binary attachments";
    return Result::Error;
  }
  if (s.empty()) {
    err = "empty packet";
    return Result::Error;
  }
  if (s[0] < '0' || s[0] > '6') {
    err = "unknown packet type";
    return Result::Error;
  }

  Packet p;
  p.type = static_cast<PacketType>(s[0] - '0');
  size_t i = 1;

  // "<count>-": digits only (leading zeros pass, as in JS). Accumulation
  // stops once past the limit, so a long run can't overflow.
  size_t count = 0;
  if (is_binary_type(p.type)) {
    const size_t start = i;
    while (i < s.size() && is_digit(s[i])) {
      if (count <= max_attachments_ && count <= kMaxCount)
        count = count * 10 + static_cast<size_t>(s[i] - '0');
      ++i;
    }
    if (i == start || i == s.size() || s[i] != '-' || count == 0) {
      err = "illegal attachment count";
      return Result::Error;
    }
    if (count > max_attachments_) {
      err = "too many attachments";
      return Result::Error;
    }
    ++i;  // '-'
  }

  // Namespace: from '/' to the first ',' (consumed) or the end.
  if (i < s.size() && s[i] == '/') {
    const size_t comma = s.find(',', i);
    const size_t end = comma == std::string_view::npos ? s.size() : comma;
    p.nsp.assign(s.substr(i, end - i));
    i = comma == std::string_view::npos ? s.size() : comma + 1;
  }

  // Ack id: a run of digits.
  if (i < s.size() && is_digit(s[i])) {
    const size_t start = i;
    while (i < s.size() && is_digit(s[i])) ++i;
    uint64_t id = 0;
    const char* first = s.data() + start;
    const char* last = s.data() + i;
    const auto r = std::from_chars(first, last, id);
    if (i - start > kMaxIdDigits || r.ec != std::errc() || r.ptr != last) {
      err = "invalid ack id";
      return Result::Error;
    }
    p.id = id;
  }

  // Data: the rest must be one JSON value (whitespace around is tolerated,
  // as by JSON.parse; anything else after it fails the parse).
  if (i < s.size()) {
    p.data = json_parse(s.substr(i));
    if (!p.data) {
      // JavaScript strings may hold lone surrogates, which JSON.stringify
      // escapes ("\ud83d") and jansson refuses: read them as U+FFFD, as a
      // UTF-8 decoder would, rather than drop the client.
      std::string fixed;
      std::string_view text = s.substr(i);
      if (replace_lone_surrogates(text, fixed)) {
        text = fixed;
        p.data = json_parse(text);
      }
      if (!p.data) {
        // Integers beyond int64 (JavaScript sends 2**64 as 18446744073709552000)
        // are read as doubles, which is what they are in JavaScript anyway; the
        // others stay integers (placeholder numbers, ids, counts).
        p.data = Json(json_loadb(text.data(), text.size(), JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL,
                                 nullptr));
        if (json_t* n = restore_integers(p.data.get())) p.data = Json(n);
      }
    }
    if (!p.data) {
      err = "invalid JSON data";
      return Result::Error;
    }
  }
  if (check_payload_ && !payload_valid(p.type, p.data.get())) {
    err = "invalid payload";
    return Result::Error;
  }

  if (is_binary_type(p.type)) {
    p.attachments.reserve(std::min(count, kMaxReserve));
    expected_ = count;
    pending_ = std::make_unique<Packet>(std::move(p));
    return Result::NeedMore;
  }
  out = std::move(p);
  return Result::Packet;
}

Decoder::Result Decoder::add_binary(std::string_view bytes, Packet& out, std::string& err) {
  if (!pending_) {
    err = "binary message outside a binary packet";
    return Result::Error;
  }
  pending_->attachments.emplace_back(bytes);
  if (pending_->attachments.size() < expected_) return Result::NeedMore;

  Packet& p = *pending_;
  if (!placeholders_valid(p.data.get(), expected_)) {
    pending_.reset();
    expected_ = 0;
    err = "invalid attachment placeholder";
    return Result::Error;
  }
  // The application sees plain events/acks; placeholders stay in `data`.
  p.type = p.type == PacketType::BinaryEvent ? PacketType::Event : PacketType::Ack;
  out = std::move(p);
  pending_.reset();
  expected_ = 0;
  return Result::Packet;
}

std::string_view trailing_offset(std::string_view header) {
  if (header.size() < 4 || !header.ends_with("\"]")) return {};
  size_t open = header.rfind('"', header.size() - 3);
  if (open == std::string_view::npos || open == 0 || header[open - 1] != ',') return {};
  return header.substr(open + 1, header.size() - 2 - (open + 1));
}

bool decode_encoded(std::string_view header, const std::vector<std::string>& attachments, Packet& out) {
  Decoder d(attachments.size(), false);
  std::string err;
  auto r = d.add_text(header, out, err);
  for (size_t i = 0; r == Decoder::Result::NeedMore && i < attachments.size(); i++)
    r = d.add_binary(attachments[i], out, err);
  return r == Decoder::Result::Packet;
}

}  // namespace dr::sio
