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
