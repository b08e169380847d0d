#include "eio/sid.h"

#include <cstring>

namespace dr::eio {
namespace {

const char kUrlAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int url_digit(char c) {
  const char* p = c ? strchr(kUrlAlphabet, c) : nullptr;
  return p ? int(p - kUrlAlphabet) : -1;
}

}  // namespace

std::string make_sid(int worker, const uint8_t random[10], uint32_t counter) {
  uint8_t b[15];
  b[0] = uint8_t(worker);
  memcpy(b + 1, random, 10);
  memcpy(b + 11, &counter, 4);
  std::string out;
  for (size_t i = 0; i + 2 < sizeof b; i += 3) {
    uint32_t v = (uint32_t(b[i]) << 16) | (uint32_t(b[i + 1]) << 8) | b[i + 2];
    for (int k = 3; k >= 0; k--) out.push_back(kUrlAlphabet[(v >> (6 * k)) & 63]);
  }
  return out;
}

int sid_worker(std::string_view sid) {
  if (sid.size() < 2) return -1;
  int a = url_digit(sid[0]), b = url_digit(sid[1]);
  if (a < 0 || b < 0) return -1;
  return (a << 2) | (b >> 4);
}

}  // namespace dr::eio
