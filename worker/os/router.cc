#include "os/router.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core/uv_util.h"
#include "eio/sid.h"

namespace dr {
namespace {

// One read buffer for every waiting connection: each read is appended to its
// connection's bytes before the next one.
char g_read_buffer[Router::kMaxLine];

}  // namespace

bool Router::line_complete(std::string_view bytes) {
  return bytes.find('\n') != std::string_view::npos || bytes.size() >= kMaxLine;
}

int Router::session_worker(std::string_view eio_path, std::string_view line) {
  size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return -1;
  std::string_view url = line.substr(sp + 1);
  url = url.substr(0, url.find_first_of(" \r\n"));
  size_t q = url.find('?');
  if (q == std::string_view::npos) return -1;
  std::string_view path = url.substr(0, q), base = eio_path;
  // "/socket.io" without the slash is the same endpoint (as the worker sees it).
  bool ours = path.substr(0, base.size()) == base ||
              (path.size() + 1 == base.size() && base.substr(0, path.size()) == path);
  if (!ours) return -1;
  std::string_view qs = url.substr(q);  // starts with '?'
  for (size_t pos = qs.find("sid="); pos != std::string_view::npos; pos = qs.find("sid=", pos + 4)) {
    if (qs[pos - 1] != '?' && qs[pos - 1] != '&') continue;
    return eio::sid_worker(qs.substr(pos + 4));
  }
  return -1;
}

Router::Waiting::Waiting(Router& r, std::unique_ptr<uv_tcp_t> t)
    : router(r), tcp(std::move(t)), deadline(r.timers_, [this] { router.finish(tcp.get(), false); }) {}

Router::~Router() {
  for (auto& [key, w] : waiting_) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(w->tcp.get()));
    close_handle(std::move(w->tcp));
  }
}

// Reads what the kernel holds now (without blocking), up to the longest line.
Router::Got Router::read_now(uv_tcp_t* tcp, std::string& bytes) {
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(tcp), &fd) != 0) return Got::More;
  while (!line_complete(bytes)) {
    ssize_t n = recv(fd, g_read_buffer, kMaxLine - bytes.size(), MSG_DONTWAIT);
    if (n == 0) return Got::End;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? Got::More : Got::End;
    bytes.append(g_read_buffer, size_t(n));
  }
  return Got::Line;
}

// Connections still waiting whose line has come since go before a new one:
// they arrived first (their data and the new connection can come in one
// wake-up of the loop, in any order).
void Router::finish_arrived() {
  if (waiting_.empty() || waiting_.size() > kRecheck) return;
  std::vector<std::pair<uv_tcp_t*, bool>> done;
  for (auto& [key, w] : waiting_) {
    Got g = read_now(key, w->bytes);
    if (g != Got::More) done.emplace_back(key, g == Got::End && w->bytes.empty());
  }
  for (auto [key, drop] : done) finish(key, drop);
}

// The bytes are read here, not peeked, and travel with the connection: the
// worker handles them as it takes the connection, in the order the master
// sent it, where reading them itself would race the next connection's read.
void Router::route(std::unique_ptr<uv_tcp_t> tcp) {
  if (waiting_.size() >= kMaxWaiting) return deliver_(-1, {}, std::move(tcp));
  finish_arrived();
  std::string bytes;
  Got g = read_now(tcp.get(), bytes);
  if (g == Got::End && bytes.empty()) return close_handle(std::move(tcp));
  if (g != Got::More) {
    int worker = session_worker(path_, bytes);
    return deliver_(worker, std::move(bytes), std::move(tcp));
  }
  // Not all there yet: read it as it comes, kWaitMs at most.
  uv_tcp_t* key = tcp.get();
  auto w = std::make_unique<Waiting>(*this, std::move(tcp));
  w->bytes = std::move(bytes);
  key->data = w.get();
  w->deadline.arm_in(kWaitMs);
  waiting_.emplace(key, std::move(w));
  int rc = uv_read_start(
      reinterpret_cast<uv_stream_t*>(key),
      [](uv_handle_t*, size_t, uv_buf_t* buf) { *buf = uv_buf_init(g_read_buffer, sizeof g_read_buffer); },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto* w = static_cast<Waiting*>(s->data);
        uv_tcp_t* key = reinterpret_cast<uv_tcp_t*>(s);
        if (nread < 0) return w->router.finish(key, w->bytes.empty());  // gone before a word: nothing to serve
        w->bytes.append(buf->base, size_t(nread));
        if (line_complete(w->bytes)) w->router.finish(key, false);
      });
  if (rc != 0) finish(key, false);
}

void Router::finish(uv_tcp_t* key, bool drop) {
  auto it = waiting_.find(key);
  if (it == waiting_.end()) return;
  std::unique_ptr<Waiting> w = std::move(it->second);
  waiting_.erase(it);
  uv_read_stop(reinterpret_cast<uv_stream_t*>(key));
  key->data = nullptr;
  if (drop) return close_handle(std::move(w->tcp));
  int worker = session_worker(path_, w->bytes);
  deliver_(worker, std::move(w->bytes), std::move(w->tcp));
  // `w` goes here, its deadline with it (finish may run from that deadline's
  // callback: a CallbackTimer may be destroyed inside it).
}

}  // namespace dr
