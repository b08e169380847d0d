// ratelimit: client addresses. One spelling per address (IPv4 as
// ::ffff:a.b.c.d inside), prefixes of trusted proxies, and the client IP
// behind them from X-Forwarded-For.
#pragma once

#include <depth-realtime/module.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace ratelimit {

using Addr = std::array<uint8_t, 16>;  // IPv4 as ::ffff:a.b.c.d

bool parse_addr(std::string_view text, Addr& out);
bool is_v4(const Addr& a);
// One spelling per address, so that ::ffff:1.2.3.4 and 1.2.3.4 count together.
std::string addr_text(const Addr& a);

struct Cidr {
  Addr addr{};
  int bits = 128;

  bool contains(const Addr& a) const {
    int full = bits / 8, rest = bits % 8;
    if (memcmp(addr.data(), a.data(), size_t(full)) != 0) return false;
    if (rest == 0) return true;
    uint8_t mask = uint8_t(0xff << (8 - rest));
    return (addr[size_t(full)] & mask) == (a[size_t(full)] & mask);
  }
};

// ADDRESS or ADDRESS/BITS; false + err ("invalid ...") otherwise.
bool parse_cidr(const std::string& item, Cidr& out, std::string& err);

// The client's IP: the peer, or behind trusted proxies the last address of
// X-Forwarded-For that is not one of them.
std::string client_address(const dr::Handshake& hs, const std::vector<Cidr>& trusted_proxies);

}  // namespace ratelimit
