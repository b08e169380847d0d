#include "os/router.h"

#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "core/uv_util.h"
#include "eio/session.h"

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

// True when the request line is complete in what was read already plus what
// the kernel holds (peeked, left there for the worker to read).
bool Router::peek_line(uv_tcp_t* tcp, std::string_view read_already, int* worker, std::string_view path) {
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(tcp), &fd) != 0) return false;
  char peek[2048];
  ssize_t n = recv(fd, peek, sizeof peek, MSG_PEEK | MSG_DONTWAIT);
  if (n <= 0) return false;
  std::string line(read_already);
  line.append(peek, size_t(n));
  if (line.find('\n') == std::string::npos) return false;
  *worker = session_worker(path, line);
  return true;
}

// Connections still waiting whose line has come since go before a new one:
// they arrived first (their data and the new connection can come in one
// wake-up of the loop, in any order).
void Router::finish_arrived() {
  if (waiting_.empty() || waiting_.size() > kRecheck) return;
  std::vector<std::pair<uv_tcp_t*, int>> ready;
  int worker;
  for (auto& [key, w] : waiting_)
    if (peek_line(key, w->bytes, &worker, path_)) ready.emplace_back(key, worker);
  for (auto [key, to] : ready) finish(key, false, to);
}

void Router::route(std::unique_ptr<uv_tcp_t> tcp) {
  if (waiting_.size() >= kMaxWaiting) return deliver_(-1, {}, std::move(tcp));
  finish_arrived();
  int worker = -1;
  if (peek_line(tcp.get(), {}, &worker, path_)) return deliver_(worker, {}, std::move(tcp));
  // Not there yet (or a line longer than the peek): read it here.
  uv_tcp_t* key = tcp.get();
  auto w = std::make_unique<Waiting>(*this, std::move(tcp));
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

void Router::finish(uv_tcp_t* key, bool drop, int worker) {
  auto it = waiting_.find(key);
  if (it == waiting_.end()) return;
  std::unique_ptr<Waiting> w = std::move(it->second);
  waiting_.erase(it);
  uv_read_stop(reinterpret_cast<uv_stream_t*>(key));
  key->data = nullptr;
  if (drop) return close_handle(std::move(w->tcp));
  if (worker == -2) worker = session_worker(path_, w->bytes);
  deliver_(worker, std::move(w->bytes), std::move(w->tcp));
  // `w` goes here, its deadline with it (finish may run from that deadline's
  // callback: a CallbackTimer may be destroyed inside it).
}

}  // namespace dr
