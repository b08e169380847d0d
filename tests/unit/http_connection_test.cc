// http::Connection on a real loopback TCP pair: the client side is a plain
// socket, the server side a Connection on a libuv loop with a test ConnectionOwner.
// Regressions found by tests/fuzz/http.cc.
#include "http/connection.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace dr::http {
namespace {

// Answers each request with 200 "ok" (up to `answer_limit` of them: a
// connection that reported the same request forever stops there).
class TestOwner : public ConnectionOwner {
 public:
  int owner_slot(std::string_view) override { return -1; }
  void on_request(Connection& c, Request& req) override {
    urls.push_back(req.url);
    if (urls.size() <= answer_limit) c.respond(200, "text/plain", "ok");
  }
  void on_ws_message(Connection&, bool, std::string_view) override {}
  void on_closed(Connection&) override {}
  void hand_off(Connection&, int, std::string) override {}
  void mark_dirty(Connection& c) override {
    c.dirty = true;
    dirty.push_back(&c);
  }
  void destroy(Connection&) override { destroyed = true; }
  Timers& timers() override { return timers_; }  // a clock that stands still: no timeout fires

  std::vector<std::string> urls;
  std::vector<Connection*> dirty;
  size_t answer_limit = 3;
  bool destroyed = false;
  Timers timers_{[] { return int64_t(0); }};
};

class ConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    uv_loop_init(&loop_);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(listen(lfd, 1), 0);
    socklen_t len = sizeof a;
    getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
    client_ = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(connect(client_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    int sfd = accept(lfd, nullptr, nullptr);
    close(lfd);
    ASSERT_GE(sfd, 0);
    auto tcp = std::make_unique<uv_tcp_t>();
    uv_tcp_init(&loop_, tcp.get());
    ASSERT_EQ(uv_tcp_open(tcp.get(), sfd), 0);
    conn_ = std::make_unique<Connection>(owner_, limits_, std::move(tcp));
    conn_->start("");
  }
  void TearDown() override {
    if (client_ >= 0) close(client_);
    if (conn_ && !conn_->closed()) conn_->close();
    pump_until([&] { return owner_.destroyed; });
    conn_.reset();
    uv_loop_close(&loop_);
  }

  void send_raw(std::string_view bytes) { ASSERT_EQ(write(client_, bytes.data(), bytes.size()), ssize_t(bytes.size())); }

  // Runs the loop (flushing as the worker does before it polls) until `done`
  // or 5 s.
  template <class F>
  bool pump_until(F done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::vector<Connection*> d;
      d.swap(owner_.dirty);
      for (Connection* c : d) c->flush();
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
    return true;
  }

  // Everything the server writes until it closes the connection.
  std::string read_until_eof() {
    std::string out;
    shutdown(client_, SHUT_WR);
    pump_until([&] {
      char buf[4096];
      ssize_t n = recv(client_, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) out.append(buf, size_t(n));
      return n == 0;
    });
    return out;
  }

  uv_loop_t loop_;
  TestOwner owner_;
  Limits limits_;
  int client_ = -1;
  std::unique_ptr<Connection> conn_;
};

// An upgrade the owner refuses (it answers it as a plain request) closes the
// connection; bytes after it are not HTTP. llhttp stays paused after an
// upgrade, and parse() used to report the same request again and again
// (a worker stuck in a loop, allocating an answer each turn).
TEST_F(ConnectionTest, RefusedUpgradeWithBytesAfterItIsReportedOnce) {
  send_raw("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
           "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /again HTTP/1.1\r\n\r\n");
  std::string out = read_until_eof();
  EXPECT_EQ(owner_.urls, std::vector<std::string>{"/socket.io/?EIO=4&transport=websocket"});
  EXPECT_EQ(out.find("HTTP/1.1 200 OK\r\n"), 0u) << out;
  EXPECT_EQ(out.find("HTTP/1.1", 1), std::string::npos) << "answered more than once: " << out;
}

// The error format (JSON for the HTTP API, text under /socket.io/) follows
// the URL however TCP cut the request: with the whole request line in one
// read, an error inside the URL used to find no URL yet and answer text.
TEST_F(ConnectionTest, ErrorInsideTheUrlIsJsonForTheApi) {
  send_raw(std::string("GET /api/v1/rooms\x01 HTTP/1.1\r\n\r\n"));
  std::string out = read_until_eof();
  EXPECT_EQ(out.find("HTTP/1.1 400 Bad Request\r\n"), 0u) << out;
  EXPECT_NE(out.find("Content-Type: application/json\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("{\"error\":{\"code\":\"BAD_REQUEST\""), std::string::npos) << out;
  EXPECT_TRUE(owner_.urls.empty());
}

TEST_F(ConnectionTest, ErrorInsideAnEngineIoUrlIsText) {
  send_raw("GET /socket.io/?EIO=4&transport=polling");
  uv_run(&loop_, UV_RUN_NOWAIT);  // loopback: the first part is read on its own
  send_raw(std::string("&t=\x01 HTTP/1.1\r\n\r\n"));
  std::string out = read_until_eof();
  EXPECT_EQ(out.find("HTTP/1.1 400 Bad Request\r\n"), 0u) << out;
  EXPECT_NE(out.find("Content-Type: text/plain\r\n"), std::string::npos) << out;
}

// A URL over max_header is refused with its own status line (it read "414 Unknown").
TEST_F(ConnectionTest, LongUrlIsUriTooLong) {
  send_raw("GET /api/" + std::string(limits_.max_header + 10, 'a') + " HTTP/1.1\r\n\r\n");
  std::string out = read_until_eof();
  EXPECT_EQ(out.find("HTTP/1.1 414 URI Too Long\r\n"), 0u) << out.substr(0, 200);
  EXPECT_NE(out.find("\"code\":\"URI_TOO_LONG\""), std::string::npos) << out.substr(0, 300);
}

}  // namespace
}  // namespace dr::http
