#include "addresses.h"

#include <arpa/inet.h>

#include <algorithm>

namespace ratelimit {

bool parse_addr(std::string_view text, Addr& out) {
  std::string s(text);
  in_addr v4;
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    out.fill(0);
    out[10] = out[11] = 0xff;
    memcpy(out.data() + 12, &v4, 4);
    return true;
  }
  return inet_pton(AF_INET6, s.c_str(), out.data()) == 1;
}

bool is_v4(const Addr& a) {
  static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return memcmp(a.data(), prefix, 12) == 0;
}

// One spelling per address, so that ::ffff:1.2.3.4 and 1.2.3.4 count together.
std::string addr_text(const Addr& a) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (is_v4(a)) inet_ntop(AF_INET, a.data() + 12, buf, sizeof buf);
  else inet_ntop(AF_INET6, a.data(), buf, sizeof buf);
  return buf;
}

bool parse_cidr(const std::string& item, Cidr& out, std::string& err) {
  Cidr cidr;
  size_t slash = item.find('/');
  if (!parse_addr(std::string_view(item).substr(0, slash), cidr.addr)) {
    err = "invalid address \"" + item + "\", expected an IP address or ADDRESS/BITS, e.g. 10.0.0.0/8";
    return false;
  }
  int max_bits = is_v4(cidr.addr) ? 32 : 128;
  if (slash != std::string::npos) {
    uint64_t bits = 0;
    std::string e;
    if (!dr::conf_parse_uint({item.substr(slash + 1)}, bits, e) || bits > uint64_t(max_bits)) {
      err = "invalid prefix length in \"" + item + "\", expected 0 to " + std::to_string(max_bits);
      return false;
    }
    cidr.bits = int(bits);
  } else {
    cidr.bits = max_bits;
  }
  if (is_v4(cidr.addr)) cidr.bits += 96;
  out = cidr;
  return true;
}

std::string client_address(const dr::Handshake& hs, const std::vector<Cidr>& trusted_proxies) {
  Addr peer;
  if (!parse_addr(hs.address, peer)) return hs.address;
  auto trusted = [&](const Addr& a) {
    return std::any_of(trusted_proxies.begin(), trusted_proxies.end(),
                       [&](const Cidr& c) { return c.contains(a); });
  };
  Addr client = peer;
  auto xff = hs.header("x-forwarded-for");
  if (xff && trusted(peer)) {
    std::string_view list(*xff);
    while (!list.empty()) {
      size_t comma = list.rfind(',');
      std::string_view item = comma == std::string_view::npos ? list : list.substr(comma + 1);
      list = comma == std::string_view::npos ? std::string_view() : list.substr(0, comma);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
      Addr a;
      if (!parse_addr(item, a)) break;  // not an address: trust nothing further left
      client = a;
      if (!trusted(a)) break;
    }
  }
  return addr_text(client);
}


}  // namespace ratelimit
