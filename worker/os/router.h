// The master's first look at a plain-HTTP connection, before any worker has
// it: the request line says whether it is for an Engine.IO session, and so
// which worker holds that session. Such a connection goes straight to that
// worker, so that all of a session's new connections reach it over one
// channel in the order their requests arrived; none takes the detour through
// another worker and the master again, where a later request (a close) could
// overtake an earlier one (a poll).
//
// The master reads what has come at accept time and, if the line is not
// complete, goes on reading it kWaitMs at most; the bytes read travel with
// the connection, and the worker handles them as it takes it. A client
// slower than that, or more than kMaxWaiting of them, go to any worker, which
// passes them on as before.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/timers.h"

namespace dr {

class Router {
 public:
  static constexpr int64_t kWaitMs = 50;
  static constexpr size_t kMaxWaiting = 1024;
  static constexpr size_t kMaxLine = 8192;  // longer: the worker answers it (414)
  static constexpr size_t kRecheck = 16;    // waiting ones looked at again before a new one goes

  // `worker_id` -1: any worker. `bytes`: what was read off the connection.
  using Deliver = std::function<void(int worker_id, std::string bytes, std::unique_ptr<uv_tcp_t> tcp)>;

  Router(uv_loop_t* loop, Timers& timers, Deliver deliver) : loop_(loop), timers_(timers), deliver_(std::move(deliver)) {}
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  void set_path(std::string eio_path) { path_ = std::move(eio_path); }
  void route(std::unique_ptr<uv_tcp_t> tcp);
  size_t waiting() const { return waiting_.size(); }

  // The worker id in the session id of a request line ("GET /socket.io/?...&sid=X HTTP/1.1"),
  // -1 when it has none or is not an Engine.IO request under `eio_path`.
  static int session_worker(std::string_view eio_path, std::string_view request_line);
  // The request line in `bytes` is complete (or can never be: too long).
  static bool line_complete(std::string_view bytes);

 private:
  struct Waiting {
    Waiting(Router& r, std::unique_ptr<uv_tcp_t> t);
    Router& router;
    std::unique_ptr<uv_tcp_t> tcp;
    std::string bytes;
    CallbackTimer deadline;
  };
  void finish(uv_tcp_t* key, bool drop);
  void finish_arrived();
  enum class Got { More, Line, End };
  static Got read_now(uv_tcp_t* tcp, std::string& bytes);

  uv_loop_t* loop_;
  Timers& timers_;
  Deliver deliver_;
  std::string path_ = "/socket.io/";
  std::unordered_map<uv_tcp_t*, std::unique_ptr<Waiting>> waiting_;
};

}  // namespace dr
