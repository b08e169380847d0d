// One client TCP connection: HTTP/1.1 requests parsed by llhttp (keep-alive,
// limits, timeouts), and after an upgrade, WebSocket messages. Output is queued
// and written once per loop turn, just before polling (see ConnectionOwner::mark_dirty),
// so frames that pile up for one client leave in one write.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/timers.h"
#include "depth-realtime/module.h"
#include "http/tls.h"
#include "http/websocket.h"

namespace dr::http {

using Bytes = std::shared_ptr<const std::string>;

struct Request {
  std::string method;
  std::string url;   // as sent: path + query
  std::string path;  // decoded path, without the query
  std::vector<std::pair<std::string, std::string>> query;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-case
  std::string body;
  bool keep_alive = true;
  bool upgrade = false;

  const std::string* header(std::string_view name) const;
  const std::string* query_param(std::string_view name) const;
};

class Connection;

// What the worker provides to its connections.
class ConnectionOwner {
 public:
  virtual ~ConnectionOwner() = default;
  // Called as soon as the URL is known: the slot of the worker that must serve
  // this request, or -1 for this one.
  virtual int owner_slot(std::string_view url) = 0;
  // A complete request. The owner answers with respond()/accept_websocket(),
  // now or later (a held long-polling GET).
  virtual void on_request(Connection& c, Request& req) = 0;
  virtual void on_ws_message(Connection& c, bool binary, std::string_view data) = 0;
  // The connection is closing; detach from it (memory goes later).
  virtual void on_closed(Connection& c) = 0;
  virtual void hand_off(Connection& c, int slot, std::string bytes) = 0;
  virtual void mark_dirty(Connection& c) = 0;
  virtual void destroy(Connection& c) = 0;
  virtual Timers& timers() = 0;  // the worker's timer facility
};

struct Limits {
  uint64_t max_header = 16 * 1024;
  uint64_t max_body = 1000000;
  uint64_t max_ws_message = 1000000;
  uint64_t max_output = 4 * 1024 * 1024;
  uint64_t header_timeout = 10000;
  uint64_t body_timeout = 10000;
  uint64_t keepalive_timeout = 75000;
  // Requests under this path (Engine.IO) get errors as plain text, as Node's
  // engine.io sends them; every other path (the HTTP API) gets JSON errors.
  std::string text_errors_path = "/socket.io/";
};

class Connection final : private ws::Reader::Sink {
  friend class ConnectionFuzzPeer;
 public:
  Connection(ConnectionOwner& owner, const Limits& limits, std::unique_ptr<uv_tcp_t> tcp);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts reading; `initial` are bytes another worker already read.
  void start(std::string_view initial);

  // HTTP answer to the current request; then the next request (keep-alive) or close.
  void respond(int status, std::string_view content_type, std::string_view body,
               const std::vector<std::pair<std::string, std::string>>& headers = {});
  // Switches to WebSocket after writing the 101 answer.
  // `deflate`: permessage-deflate was negotiated (the caller adds the header).
  void accept_websocket(const Request& req, const std::vector<std::pair<std::string, std::string>>& headers,
                        bool deflate = false);
  bool is_websocket() const { return websocket_; }
  bool deflate() const { return deflate_; }
  bool request_pending() const { return in_request_; }

  // Bytes for the socket, copied into the connection's output buffer: what
  // is queued in one loop turn leaves in one write.
  void send(std::string_view bytes);
  void send(const Bytes& b) { send(std::string_view(*b)); }
  // One unfragmented WebSocket frame, written straight into the output
  // buffer; `deflated`: the payload is permessage-deflate (RSV1 set).
  void send_frame(ws::Opcode op, std::string_view payload, bool deflated = false);
  // Writes queued output (called just before the loop polls).
  void flush();
  // No write in progress and nothing queued: a volatile packet may leave now.
  bool writable() const { return !writing_ && out_.empty(); }

  // Gives the socket away (to another worker); the connection is dead after.
  std::unique_ptr<uv_tcp_t> release_tcp();

  // Closes at once (queued output is still attempted once).
  void close();
  void close_after_flush();
  // A WebSocket closed by us: a close frame (no status, as Node's ws sends), then the socket.
  void close_websocket();
  bool closed() const { return closed_; }

  void on_timeout();  // header, body, keep-alive or drain timeout

  const std::string& address() const { return address_; }
  Listener listener = Listener::Main;  // which kind of listener accepted it
  uint32_t owner_index = 0;  // where the worker keeps it (ConnectionOwner's)
  // The worker is stopping: answers say "Connection: close", and an idle
  // connection goes after a short grace (closing one at once races a request
  // the client may be sending on it).
  void drain(int64_t grace_ms);
  // Makes this a TLS connection (before start()).
  void use_tls(const std::shared_ptr<SSL_CTX>& ctx);
  bool is_tls() const { return tls_ != nullptr; }
  void* owner = nullptr;  // the Engine.IO session using this connection, if any
  const uint64_t serial = next_serial_++;  // unique in this process
  static inline uint64_t next_serial_ = 1;

 private:
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  void on_data(std::string_view data);
  void parse();
  void handle_message_complete();
  void finish_request();
  void fail(int status, std::string_view message);
  void write_done(int status);

  static const llhttp_settings_t* settings();
  static int cb_message_begin(llhttp_t* p);
  static int cb_url(llhttp_t* p, const char* at, size_t len);
  static int cb_url_complete(llhttp_t* p);
  static int cb_header_field(llhttp_t* p, const char* at, size_t len);
  static int cb_header_value(llhttp_t* p, const char* at, size_t len);
  static int cb_headers_complete(llhttp_t* p);
  static int cb_body(llhttp_t* p, const char* at, size_t len);
  static int cb_message_complete(llhttp_t* p);

  ConnectionOwner& owner_;
  const Limits& limits_;
  std::unique_ptr<uv_tcp_t> tcp_;
  std::string address_;

  // HTTP state; dropped after a WebSocket upgrade (the reader replaces it).
  struct HttpState {
    explicit HttpState(Connection& c);
    llhttp_t parser;
    Request req;
    std::string field;
    std::string in;        // bytes read but not yet given to llhttp
    std::string consumed;  // bytes of the current request llhttp has seen
    size_t header_bytes = 0;
    int handoff_slot = -1;  // the request belongs to another worker
    int error_status = 0;   // answer for a request the callbacks refused
    bool field_done = true;
    Timer timeout;  // the header, body, keep-alive or drain deadline, when one runs
  };
  std::unique_ptr<HttpState> http_;

  // ws::Reader::Sink
  void on_ws_message(bool binary, bool compressed, std::string_view data) override;
  void ws_send(std::string_view bytes) override { send(bytes); }
  void on_ws_close(uint16_t) override { close_after_flush(); }

  // Inline, made with the connection (no optional's flag word): used once websocket_.
  ws::Reader ws_;
  std::unique_ptr<tls::Session> tls_;
  void tls_encrypt_output();

  bool reserve_output(size_t n);  // false: the connection is past its bound
  void release_output();

  std::string out_;         // queued, not yet handed to libuv; no capacity when empty
  size_t out_bytes_ = 0;    // queued and being written
  // Bits, beside may_hand_off and dirty: one word for all the flags.
  bool in_request_ : 1 = false;  // a complete request awaits its answer
  bool paused_ : 1 = false;
  bool deflate_ : 1 = false;
  bool websocket_ : 1 = false;  // upgraded: ws_ reads
  bool writing_ : 1 = false;
  bool close_after_flush_ : 1 = false;
  bool overflowed_ : 1 = false;  // past max_output: closed at the next flush, not inside the send
  bool draining_ : 1 = false;
  bool closed_ : 1 = false;

 public:
  // Here, beside the bits above: one word for every flag.
  bool may_hand_off = true;  // false once the master found no owner
  bool dirty = false;

 private:
  void cancel_timeout() {
    if (http_) http_->timeout.cancel();
  }
};

const char* status_text(int status);

}  // namespace dr::http
