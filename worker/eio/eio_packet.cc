#include "eio/eio_packet.h"

#include <array>

namespace dr::eio {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Decoding table: the 6-bit value of each alphabet character, 0xFF for
// anything else ('=' included; padding is handled separately).
constexpr std::array<uint8_t, 256> make_decode_table() {
  std::array<uint8_t, 256> t{};
  for (auto& v : t) v = 0xFF;
  for (uint8_t i = 0; i < 64; ++i) t[static_cast<uint8_t>(kAlphabet[i])] = i;
  return t;
}
constexpr std::array<uint8_t, 256> kDecode = make_decode_table();

inline uint8_t sextet(char c) { return kDecode[static_cast<uint8_t>(c)]; }

// Appends base64(bytes) to `out` without an intermediate string.
void base64_append(std::string_view bytes, std::string& out) {
  const size_t n = bytes.size();
  const size_t start = out.size();
  out.resize(start + (n + 2) / 3 * 4);
  char* dst = out.data() + start;
  const auto* src = reinterpret_cast<const uint8_t*>(bytes.data());
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const uint32_t v = (uint32_t{src[i]} << 16) | (uint32_t{src[i + 1]} << 8) | src[i + 2];
    *dst++ = kAlphabet[v >> 18];
    *dst++ = kAlphabet[(v >> 12) & 63];
    *dst++ = kAlphabet[(v >> 6) & 63];
    *dst++ = kAlphabet[v & 63];
  }
  if (const size_t rest = n - i; rest > 0) {
    uint32_t v = uint32_t{src[i]} << 16;
    if (rest == 2) v |= uint32_t{src[i + 1]} << 8;
    *dst++ = kAlphabet[v >> 18];
    *dst++ = kAlphabet[(v >> 12) & 63];
    *dst++ = rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    *dst++ = '=';
  }
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out;
  base64_append(bytes, out);
  return out;
}

// Strict: the length is a multiple of 4, only alphabet characters, '=' only as
// the last one or two characters, and the bits under the padding are zero
// (the only form btoa()/Buffer produce), so every byte string has exactly one
// accepted encoding.
bool base64_decode(std::string_view text, std::string& out) {
  out.clear();
  const size_t n = text.size();
  if (n % 4 != 0) return false;
  if (n == 0) return true;

  size_t pad = 0;
  if (text[n - 1] == '=') pad = text[n - 2] == '=' ? 2 : 1;
  out.resize(n / 4 * 3);
  auto* dst = reinterpret_cast<uint8_t*>(out.data());
  const char* src = text.data();

  // Every quad but the last: no padding allowed there. OR-ing the table
  // values catches a bad character (0xFF) anywhere with a single test.
  const size_t full = n - 4;
  for (size_t i = 0; i < full; i += 4) {
    const uint8_t a = sextet(src[i]), b = sextet(src[i + 1]), c = sextet(src[i + 2]),
                  d = sextet(src[i + 3]);
    if ((a | b | c | d) & 0xC0) return false;
    const uint32_t v = (uint32_t{a} << 18) | (uint32_t{b} << 12) | (uint32_t{c} << 6) | d;
    *dst++ = static_cast<uint8_t>(v >> 16);
    *dst++ = static_cast<uint8_t>(v >> 8);
    *dst++ = static_cast<uint8_t>(v);
  }

  // Last quad: "xxxx", "xxx=" or "xx==".
  const char* q = src + full;
  const uint8_t a = sextet(q[0]), b = sextet(q[1]);
  const uint8_t c = pad == 2 ? 0 : sextet(q[2]);
  const uint8_t d = pad >= 1 ? 0 : sextet(q[3]);
  if ((a | b | c | d) & 0xC0) return false;
  const uint32_t v = (uint32_t{a} << 18) | (uint32_t{b} << 12) | (uint32_t{c} << 6) | d;
  if (pad == 2 && (v & 0xFFFF) != 0) return false;  // non-canonical trailing bits
  if (pad == 1 && (v & 0xFF) != 0) return false;
  *dst++ = static_cast<uint8_t>(v >> 16);
  if (pad < 2) *dst++ = static_cast<uint8_t>(v >> 8);
  if (pad < 1) *dst++ = static_cast<uint8_t>(v);
  out.resize(out.size() - pad);
  return true;
}

bool decode_text(std::string_view s, Packet& out) {
  if (s.empty()) return false;
  const char t = s[0];
  if (t == 'b') {
    out.type = PacketType::Message;
    out.binary = true;
    return base64_decode(s.substr(1), out.data);
  }
  if (t < '0' || t > '6') return false;
  out.type = static_cast<PacketType>(t - '0');
  out.binary = false;
  out.data.assign(s.substr(1));
  return true;
}

bool decode_payload(std::string_view body, std::vector<Packet>& out) {
  out.clear();
  // split() semantics: an empty body or an empty record (e.g. a trailing
  // separator) is a record that fails to decode, as in engine.io-parser.
  size_t pos = 0;
  while (true) {
    const size_t sep = body.find(kRecordSeparator, pos);
    const size_t end = sep == std::string_view::npos ? body.size() : sep;
    out.emplace_back();
    if (!decode_text(body.substr(pos, end - pos), out.back())) {
      out.pop_back();
      return false;
    }
    if (sep == std::string_view::npos) return true;
    pos = sep + 1;
  }
}

void encode_text(const Packet& p, std::string& out) {
  // The binary flag means something only for messages (header contract).
  if (p.binary && p.type == PacketType::Message) {
    out.reserve(out.size() + 1 + (p.data.size() + 2) / 3 * 4);
    out.push_back('b');
    base64_append(p.data, out);
    return;
  }
  out.reserve(out.size() + 1 + p.data.size());
  out.push_back(static_cast<char>('0' + static_cast<int>(p.type)));
  out.append(p.data);
}

}  // namespace dr::eio
