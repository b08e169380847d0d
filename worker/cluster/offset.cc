#include "cluster/offset.h"

#include <cstring>

#include "core/uv_util.h"

namespace dr::cluster {
namespace {

constexpr int64_t kOffsetSaneMs = 86400000;  // an offset's clock is within a day of ours

}  // namespace

std::string base64_number(uint64_t v) {
  std::string out;
  do {
    out.insert(out.begin(), kBase64Digits[v % 64]);
    v /= 64;
  } while (v);
  return out;
}

int64_t parse_base64_number(std::string_view s) {
  int64_t v = 0;
  for (char c : s) {
    const char* p = c ? strchr(kBase64Digits, c) : nullptr;
    if (!p) return -1;
    v = v * 64 + (p - kBase64Digits);
  }
  return v;
}

std::string make_offset(int64_t ms, std::string_view uid, uint64_t seq) {
  std::string out = base64_number(uint64_t(ms));
  out += '.';
  out += uid;
  out += base64_number(seq);
  return out;
}

int64_t offset_ms(std::string_view offset) {
  size_t dot = offset.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot > 10 || dot + 1 == offset.size()) return -1;
  int64_t v = parse_base64_number(offset.substr(0, dot));
  if (v < 0) return -1;
  int64_t now = now_ms();
  return v > now - kOffsetSaneMs && v < now + kOffsetSaneMs ? v : -1;
}

}  // namespace dr::cluster
