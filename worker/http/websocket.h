// WebSocket (RFC 6455) for the server side. Reading goes through wslay's
// frame layer over the connection's read buffer: a whole message in one frame
// reaches the caller as a view of the unmasked bytes, and only a message in
// several frames (or larger than wslay's 4 KB buffer) is copied together. The
// frame context is one per process, clean between frames, so an idle
// connection holds no wslay memory and no message allocates one.
// Server frames are written by hand, unmasked, straight into each
// connection's output buffer (a broadcast's payload is encoded once).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace dr::ws {

enum class Opcode : uint8_t { Text = 1, Binary = 2, Close = 8, Ping = 9, Pong = 10 };

// The whole frame (header + payload) of one unfragmented server message.
std::string frame(Opcode op, std::string_view payload);
void frame_to(Opcode op, std::string_view payload, std::string& out);
// The bytes of a server frame's header for a payload of `n` bytes.
constexpr size_t frame_header_size(size_t n) { return n < 126 ? 2 : n < 65536 ? 4 : 10; }
// A close frame with a status code.
std::string close_frame(uint16_t code);

// Sec-WebSocket-Accept for a Sec-WebSocket-Key.
std::string accept_key(std::string_view client_key);

class Reader {
 public:
  // Where a reader's findings go: the connection itself (one pointer per
  // reader, no callbacks of its own to hold).
  class Sink {
   public:
    virtual ~Sink() = default;
    // `compressed`: RSV1 was set (permessage-deflate); the sink inflates.
    virtual void on_ws_message(bool binary, bool compressed, std::string_view data) = 0;
    virtual void ws_send(std::string_view bytes) = 0;  // control frames the reader answers with
    // Peer closed, or protocol error / too big; the close frame (the answer,
    // or the error's) has gone to ws_send already.
    virtual void on_ws_close(uint16_t code) = 0;
  };

  Reader(uint64_t max_message, bool allow_compressed, Sink& sink);
  ~Reader();

  // Feeds bytes from the socket. Returns false once the connection must close
  // (on_close has been called).
  bool feed(std::string_view bytes);
  // The connection is closing: nothing more is read, not even the rest of
  // the bytes being fed, and nothing more sent (unless the reader closed
  // first: the answer to a client's close still goes).
  void stop() { closed_ = true; }
  // Limits set again before the first feed (a reader made before they were known).
  void configure(uint64_t max_message, bool allow_compressed) {
    max_message_ = max_message;
    allow_compressed_ = allow_compressed;
  }

 private:
  // One whole frame (header included): its message or control frame is
  // handled. False once the reader is closed.
  bool read_frame(std::string_view frame);
  bool control_frame(uint8_t opcode, std::string_view payload);
  // A protocol error: `close_payload` goes out as the close frame's body.
  bool fail(std::string_view close_payload, uint16_t reported);
  void end_message();

  Sink& sink_;
  uint64_t max_message_;
  // Only while they hold bytes (an idle connection keeps neither):
  std::unique_ptr<std::string> in_;   // the start of a frame TCP has not delivered whole yet
  std::unique_ptr<std::string> msg_;  // a message in several frames (or chunks) so far
  uint64_t msg_len_ = 0;
  uint32_t utf8_ = 0;       // the text message's UTF-8 check, between bytes
  uint8_t msg_opcode_ = 0;  // the message in progress: text, binary, or 0
  bool msg_compressed_ = false;
  bool allow_compressed_;
  bool closed_ = false;
};

// A sink of three functions, for tests and tools that read a stream by hand.
struct FunctionSink final : Reader::Sink {
  std::function<void(bool binary, bool compressed, std::string_view data)> message;
  std::function<void(std::string_view bytes)> send;
  std::function<void(uint16_t code)> close;
  FunctionSink(decltype(message) m, decltype(send) s, decltype(close) c)
      : message(std::move(m)), send(std::move(s)), close(std::move(c)) {}
  void on_ws_message(bool binary, bool compressed, std::string_view data) override { message(binary, compressed, data); }
  void ws_send(std::string_view bytes) override { send(bytes); }
  void on_ws_close(uint16_t code) override { close(code); }
};

}  // namespace dr::ws
