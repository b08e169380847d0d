#include "os/channel.h"

#include <cstring>
#include <sys/time.h>

#include "core/uv_util.h"
#include "depth-realtime/module.h"

namespace dr {

int64_t now_ms() {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  return int64_t(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
}

namespace {

struct Header {
  uint32_t type;
  uint32_t len;
};

struct ChannelWrite {
  uv_write_t req;
  std::string bytes;
  std::unique_ptr<uv_tcp_t> handle;  // closed once the descriptor has left
};

constexpr size_t kMaxMessage = 64 * 1024 * 1024;

}  // namespace

Channel::~Channel() { close(); }

bool Channel::open(uv_loop_t* loop, int fd, OnMessage on_message, OnClose on_close) {
  pipe_ = make_handle<uv_pipe_t>();
  uv_pipe_init(loop, pipe_.get(), 1);
  if (uv_pipe_open(pipe_.get(), fd) != 0) {
    close_handle(std::move(pipe_));
    return false;
  }
  pipe_->data = this;
  on_message_ = std::move(on_message);
  on_close_ = std::move(on_close);
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(pipe_.get()),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static char chunk[64 * 1024];  // one loop per process: a static buffer is enough
        *buf = uv_buf_init(chunk, sizeof chunk);
      },
      on_read);
  return true;
}

int Channel::fd() const {
  uv_os_fd_t fd = -1;
  if (pipe_) uv_fileno(reinterpret_cast<const uv_handle_t*>(pipe_.get()), &fd);
  return fd;
}

void Channel::close() {
  if (!pipe_) return;
  pipe_->data = nullptr;
  close_handle(std::move(pipe_));
}

void Channel::send(ChannelMsg type, std::string_view body, std::unique_ptr<uv_tcp_t> handle) {
  if (!pipe_) {
    if (handle) close_handle(std::move(handle));
    return;
  }
  auto w = std::make_unique<ChannelWrite>();
  Header h{uint32_t(type), uint32_t(body.size())};
  w->bytes.reserve(sizeof h + body.size());
  w->bytes.append(reinterpret_cast<const char*>(&h), sizeof h).append(body);
  w->handle = std::move(handle);
  uv_buf_t buf = uv_buf_init(w->bytes.data(), unsigned(w->bytes.size()));
  auto* raw = w.get();
  raw->req.data = raw;
  int rc = uv_write2(&raw->req, reinterpret_cast<uv_stream_t*>(pipe_.get()), &buf, 1,
                     raw->handle ? reinterpret_cast<uv_stream_t*>(raw->handle.get()) : nullptr,
                     [](uv_write_t* req, int status) {
                       std::unique_ptr<ChannelWrite> done(static_cast<ChannelWrite*>(req->data));
                       if (status < 0) logf(LogLevel::Warn, "channel write failed: %s", uv_strerror(status));
                       if (done->handle) close_handle(std::move(done->handle));
                     });
  if (rc < 0) {
    logf(LogLevel::Error, "channel write failed: %s", uv_strerror(rc));
    if (raw->handle) close_handle(std::move(raw->handle));
    return;
  }
  w.release();  // owned by the write request until its callback
}

void Channel::on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* self = static_cast<Channel*>(s->data);
  if (!self) return;
  if (n < 0) {
    auto cb = self->on_close_;
    self->close();
    if (cb) cb();
    return;
  }
  self->in_.append(buf->base, size_t(n));
  self->parse();
}

void Channel::parse() {
  size_t pos = 0;
  while (pipe_ && in_.size() - pos >= sizeof(Header)) {
    Header h;
    memcpy(&h, in_.data() + pos, sizeof h);
    if (h.len > kMaxMessage) {
      log(LogLevel::Crit, "channel: corrupt message, closing");
      auto cb = on_close_;
      close();
      if (cb) cb();
      return;
    }
    if (in_.size() - pos - sizeof h < h.len) break;
    std::unique_ptr<uv_tcp_t> handle;
    auto type = ChannelMsg(h.type);
    if ((type == ChannelMsg::Connection || type == ChannelMsg::Handoff) &&
        uv_pipe_pending_count(pipe_.get()) > 0) {
      handle = make_handle<uv_tcp_t>();
      uv_tcp_init(pipe_->loop, handle.get());
      if (uv_accept(reinterpret_cast<uv_stream_t*>(pipe_.get()), reinterpret_cast<uv_stream_t*>(handle.get())) != 0) {
        close_handle(std::move(handle));
      }
    }
    std::string_view body(in_.data() + pos + sizeof h, h.len);
    pos += sizeof h + h.len;
    on_message_(type, body, std::move(handle));
  }
  in_.erase(0, pos);
}

}  // namespace dr
