// WebSocket (RFC 6455) for the server side. Reading goes through wslay, which
// reassembles messages, answers pings and enforces the message size limit.
// The wslay context is created only while a message is being received and
// dropped at message boundaries: an idle connection holds no wslay memory
// (its context carries a 4 KB input buffer, half our per-connection budget).
// Server frames are written by hand: they are unmasked, so one encoded frame
// can be shared by every recipient of a broadcast.
#pragma once

#include <wslay/wslay.h>

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
// A close frame with a status code.
std::string close_frame(uint16_t code);
// A frame whose payload is already deflated (RSV1 set, RFC 7692).
std::string deflated_frame(Opcode op, std::string_view deflated_payload);

// Sec-WebSocket-Accept for a Sec-WebSocket-Key.
std::string accept_key(std::string_view client_key);

class Reader {
 public:
  struct Callbacks {
    // `compressed`: RSV1 was set (permessage-deflate); the caller inflates.
    std::function<void(bool binary, bool compressed, std::string_view data)> on_message;
    std::function<void(std::string_view bytes)> send;  // control frames wslay answers with
    // Peer closed, or protocol error / too big; the close frame (the answer,
    // or the error's) has gone to `send` already.
    std::function<void(uint16_t code)> on_close;
  };

  Reader(uint64_t max_message, bool allow_compressed, Callbacks cb);
  ~Reader();

  // Feeds bytes from the socket. Returns false once the connection must close
  // (on_close has been called).
  bool feed(std::string_view bytes);
  // The connection is closing: nothing more is read, not even the rest of
  // the bytes being fed, and nothing more sent (unless the reader closed
  // first: the answer to a client's close still goes).
  void stop() {
    if (!closed_) stopped_ = true;
    closed_ = true;
  }

 private:
  struct CtxDeleter {
    void operator()(wslay_event_context* c) const { wslay_event_context_free(c); }
  };
  // Where the buffered input ends on a message boundary (0 = inside a message).
  size_t scan(bool& fatal);
  bool read_frames(size_t usable);

  uint64_t max_message_;
  bool allow_compressed_;
  Callbacks cb_;
  std::string in_;      // bytes not yet given to wslay
  size_t feed_pos_ = 0;
  size_t feed_end_ = 0;
  std::unique_ptr<wslay_event_context, CtxDeleter> ctx_;
  bool in_fragmented_ = false;  // a message continues in later frames
  bool closed_ = false;
  bool stopped_ = false;  // by the connection: nothing more goes out either
  uint16_t fatal_code_ = 1002;
};

}  // namespace dr::ws
