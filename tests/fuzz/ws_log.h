// What a WebSocket reader delivered, for the chunking differentials of the
// websocket and http targets.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

struct WsLog {
  // One entry per message ('T'/'B' + 'Z' when compressed, then the data) or
  // close ('C' + code); control-frame answers are compared as one byte string.
  std::vector<std::string> events;
  std::string sent;

  void message(bool binary, bool compressed, std::string_view data) {
    std::string e(binary ? "B" : "T");
    if (compressed) e += 'Z';
    e += ':';
    e.append(data);
    events.push_back(std::move(e));
  }
  void close(uint16_t code) { events.push_back("C" + std::to_string(code)); }

  bool operator==(const WsLog& o) const { return events == o.events && sent == o.sent; }
  void print(const char* title) const {
    std::fprintf(stderr, "%s: %zu events, %zu bytes sent\n", title, events.size(), sent.size());
    for (const std::string& e : events) std::fprintf(stderr, "  %.80s%s\n", e.c_str(), e.size() > 80 ? "..." : "");
  }
};

// Helpers for the tolerance of the known reader issues (see websocket.cc).

inline bool is_prefix(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  return a.size() <= b.size() && std::equal(a.begin(), a.end(), b.begin());
}

// One of the byte strings is the start of the other.
inline bool same_start(const std::string& a, const std::string& b) {
  return a.size() <= b.size() ? b.compare(0, a.size(), a) == 0 : a.compare(0, b.size(), b) == 0;
}

// The server frames in `sent` before the first close frame.
inline std::string before_close(const std::string& sent) {
  size_t pos = 0;
  while (sent.size() - pos >= 2) {
    if ((uint8_t(sent[pos]) & 0x0f) == 8) return sent.substr(0, pos);
    uint64_t len = uint8_t(sent[pos + 1]) & 0x7f;
    size_t hdr = len == 126 ? 4 : len == 127 ? 10 : 2;
    if (sent.size() - pos < hdr) break;
    if (len >= 126) {
      len = 0;
      for (size_t i = 2; i < hdr; i++) len = (len << 8) | uint8_t(sent[pos + i]);
    }
    if (sent.size() - pos - hdr < len) break;
    pos += hdr + len;
  }
  return sent;
}
