// The HTTP request path: llhttp and the callbacks of http::Connection
// (worker/http/connection.cc: URL split and decoding, query parsing, header
// and body limits, pipelining, hand-off, the WebSocket upgrade and the
// messages after it, permessage-deflate included).
//
// A real Connection on an initialised but unconnected uv_tcp_t is fed bytes
// as the socket would deliver them (ConnectionFuzzPeer reaches on_data and
// the output queue); a stub ConnectionOwner answers every request at once. The stream
// is fed twice, whole and in chunks whose sizes come from the input, and the
// requests seen, the bytes written and the hand-off must not depend on the
// cuts. Input: byte 0 = number N of chunk sizes (mod 16), N bytes of sizes
// (1 + value, used in turn), then the stream.
#include <uv.h>

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "http/connection.h"
#include "ws_log.h"

namespace dr::http {

class ConnectionFuzzPeer {
 public:
  static void feed(Connection& c, std::string_view bytes) { c.on_data(bytes); }
  // What the connection queued for the socket (taken, so it never piles up).
  static std::string take_output(Connection& c) {
    std::string s;
    s.swap(c.out_);
    c.out_bytes_ = 0;
    return s;
  }
  // The socket would read no more.
  static bool reading_stopped(const Connection& c) { return c.closed_ || c.close_after_flush_; }
};

}  // namespace dr::http

using namespace dr::http;

namespace {

struct Trace {
  std::vector<std::string> requests;  // each request as the owner saw it
  std::string http_output;            // answers before any upgrade
  WsLog ws;                           // after an upgrade
  bool upgraded = false;
  bool handed_off = false;
  std::string handoff_bytes;
};

class FuzzOwner : public ConnectionOwner {
 public:
  explicit FuzzOwner(Trace& t) : t_(t) {}

  // A polling request for a session of another worker goes there.
  int owner_slot(std::string_view url) override {
    return url.find("sid=elsewhere") != std::string_view::npos ? 1 : -1;
  }

  void on_request(Connection& c, Request& req) override {
    FUZZ_CHECK(!t_.handed_off && !t_.upgraded, "a request after the connection was given away");
    std::string r = req.method + " " + req.url + "\npath=" + req.path + "\n";
    FUZZ_CHECK(req.url.find('?') != std::string::npos || req.query.empty(), "a query without '?'");
    for (auto& [k, v] : req.query) r += "q:" + k + "=" + v + "\n";
    for (auto& [k, v] : req.headers) {
      for (char ch : k) FUZZ_CHECK(!isupper(static_cast<unsigned char>(ch)), "a header name not lower-cased");
      r += "h:" + k + "=" + v + "\n";
    }
    FUZZ_CHECK(req.body.size() <= limits().max_body, "a body over the limit");
    r += "body=" + req.body + (req.keep_alive ? "\nkeep-alive" : "\nclose") + (req.upgrade ? "\nupgrade" : "");
    t_.requests.push_back(std::move(r));
    const std::string* up = req.header("upgrade");
    if (req.upgrade && up && *up == "websocket" && req.header("sec-websocket-key")) {
      const std::string* ext = req.header("sec-websocket-extensions");
      bool deflate = ext && ext->find("permessage-deflate") != std::string::npos;
      c.accept_websocket(req, {}, deflate);
      t_.upgraded = true;
      return;
    }
    c.respond(200, "text/plain", "ok " + req.path, {{"X-Requests", std::to_string(t_.requests.size())}});
  }

  void on_ws_message(Connection&, bool binary, std::string_view data) override {
    FUZZ_CHECK(data.size() <= limits().max_ws_message, "a WebSocket message over the limit");
    t_.ws.message(binary, false, data);
  }
  void on_closed(Connection&) override {}
  void hand_off(Connection&, int, std::string bytes) override {
    t_.handed_off = true;
    t_.handoff_bytes = std::move(bytes);
  }
  void mark_dirty(Connection&) override {}
  void destroy(Connection&) override {}
  // Timeouts never fire here: the clock stands still and nothing runs them.
  dr::Timers& timers() override { return timers_; }

  static const Limits& limits() {
    static const Limits l = [] {
      Limits x;
      x.max_header = 1024;  // small, so that the limits are reached
      x.max_body = 2048;
      x.max_ws_message = 4096;
      x.max_output = size_t(1) << 30;  // the output is taken after every read
      return x;
    }();
    return l;
  }

 private:
  Trace& t_;
  dr::Timers timers_{[] { return int64_t(0); }};
};

uv_loop_t* loop() {
  static uv_loop_t* l = [] {
    static uv_loop_t storage;
    uv_loop_init(&storage);
    return &storage;
  }();
  return l;
}

Trace run(std::string_view stream, const std::vector<size_t>& chunks) {
  Trace t;
  FuzzOwner owner(t);
  auto tcp = std::make_unique<uv_tcp_t>();
  uv_tcp_init(loop(), tcp.get());
  auto conn = std::make_unique<Connection>(owner, FuzzOwner::limits(), std::move(tcp));
  conn->start("");
  size_t pos = 0, turn = 0;
  while (pos < stream.size() && !t.handed_off && !ConnectionFuzzPeer::reading_stopped(*conn)) {
    size_t n = chunks.empty() ? stream.size() : std::min(chunks[turn++ % chunks.size()], stream.size() - pos);
    bool was_ws = conn->is_websocket();
    ConnectionFuzzPeer::feed(*conn, stream.substr(pos, n));
    pos += n;
    std::string out = ConnectionFuzzPeer::take_output(*conn);
    if (!was_ws && conn->is_websocket()) {
      // The 101 answer is HTTP; frames written after it belong to the WebSocket.
      size_t end = out.find("\r\n\r\n", out.rfind("HTTP/1.1 101 "));
      FUZZ_CHECK(end != std::string::npos, "an upgrade without a 101 answer");
      t.http_output += out.substr(0, end + 4);
      t.ws.sent += out.substr(end + 4);
    } else {
      (conn->is_websocket() ? t.ws.sent : t.http_output) += out;
    }
  }
  std::unique_ptr<uv_tcp_t> released;
  if (t.handed_off) {
    FUZZ_CHECK(!t.handoff_bytes.empty(), "an empty hand-off");
    FUZZ_CHECK(stream.substr(0, pos).ends_with(t.handoff_bytes), "hand-off bytes that were not the last ones read");
    released = conn->release_tcp();
    uv_close(reinterpret_cast<uv_handle_t*>(released.get()), nullptr);
  } else {
    conn->close();
  }
  uv_run(loop(), UV_RUN_NOWAIT);  // the close callbacks
  return t;
}

// A request both over a header limit and malformed further on is refused
// with 414/431 when llhttp handed the long piece over before it found the
// error, and with 400 when it found the error first (in one read): the
// request is refused and the connection closed either way, so a final 400,
// 414 or 431 answer compares as one kind of refusal.
std::string normalized(const std::string& out) {
  size_t last = out.rfind("HTTP/1.1 ");
  if (last == std::string::npos) return out;
  std::string_view status = std::string_view(out).substr(last + 9, 3);
  if (status != "400" && status != "414" && status != "431") return out;
  return out.substr(0, last) + "<refused: request line or headers>";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  size_t n = data[0] % 16;
  if (size < 1 + n) return 0;
  std::vector<size_t> chunks;
  for (size_t i = 0; i < n; i++) chunks.push_back(size_t(data[1 + i]) + 1);
  if (chunks.empty()) chunks.push_back(1);
  std::string_view stream(reinterpret_cast<const char*>(data + 1 + n), size - 1 - n);

  Trace whole = run(stream, {});
  Trace split = run(stream, chunks);
  bool same = whole.requests == split.requests && normalized(whole.http_output) == normalized(split.http_output) &&
              whole.upgraded == split.upgraded && whole.handed_off == split.handed_off &&
              whole.handoff_bytes.starts_with(split.handoff_bytes);
  bool ws_same = whole.ws == split.ws;  // after an upgrade
  if (!same || !ws_same) {
    std::fprintf(stderr, "whole: %zu requests, %zu bytes out, upgraded %d, handed off %d (%zu bytes)\n",
                 whole.requests.size(), whole.http_output.size(), whole.upgraded, whole.handed_off,
                 whole.handoff_bytes.size());
    std::fprintf(stderr, "split: %zu requests, %zu bytes out, upgraded %d, handed off %d (%zu bytes)\n",
                 split.requests.size(), split.http_output.size(), split.upgraded, split.handed_off,
                 split.handoff_bytes.size());
    std::fprintf(stderr, "whole output:\n%.400s\nsplit output:\n%.400s\n", whole.http_output.c_str(),
                 split.http_output.c_str());
    whole.ws.print("whole ws");
    split.ws.print("split ws");
    FUZZ_CHECK(false, "the connection's behaviour depends on how the stream was cut");
  }
  return 0;
}
