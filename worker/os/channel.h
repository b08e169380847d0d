// The master <-> worker channel: a socketpair carrying small framed messages
// {type, length, body}, some of them with a file descriptor (a client
// connection) attached, as nginx's channel does.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace dr {

enum class ChannelMsg : uint32_t {
  Connection = 1,  // master -> worker, fd attached; body = u32 listener kind + bytes already read
  Handoff = 2,     // worker -> master, fd attached; body = u32 target slot + u32 listener kind + bytes
  Broadcast = 3,   // both ways; body = an encoded adapter broadcast (worker/sio/adapter.h)
  Reload = 4,      // master -> worker: the configuration changed in ways it can apply in place
  Heartbeat = 5,   // master -> worker, answered with the same body from the worker's loop: it is not hung
};

// Flag in the listener kind of a Connection message: the listener is TLS.
inline constexpr uint32_t kListenerSsl = 0x100;
// ... and: the master found no worker for the session named: serve it here
// (a "Session ID unknown" answer), do not pass it on again.
inline constexpr uint32_t kNoHandoff = 0x200;

class Channel {
 public:
  // `fd_handle`: the client connection that came with the message (owned by
  // the receiver from then on), or null.
  using OnMessage = std::function<void(ChannelMsg type, std::string_view body, std::unique_ptr<uv_tcp_t> fd_handle)>;
  using OnClose = std::function<void()>;

  Channel() = default;
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  bool open(uv_loop_t* loop, int fd, OnMessage on_message, OnClose on_close);
  // Sends a message; with `handle`, its descriptor travels along and the
  // handle is closed (in this process) once sent.
  void send(ChannelMsg type, std::string_view body, std::unique_ptr<uv_tcp_t> handle = nullptr);
  void close();
  bool is_open() const { return pipe_ != nullptr; }
  int fd() const;

 private:
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  void parse();

  std::unique_ptr<uv_pipe_t> pipe_;
  std::string in_;
  OnMessage on_message_;
  OnClose on_close_;
};

}  // namespace dr
