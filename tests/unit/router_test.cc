// The master's reading of a request line: which worker's session it is for.
#include "os/router.h"

#include <gtest/gtest.h>

namespace dr {
namespace {

TEST(Router, SessionWorkerComesFromTheSidOfAnEngineIoRequest) {
  // Worker 0 makes sids starting "AA".."AP", worker 1 "AQ".."Af" (eio/session.cc).
  EXPECT_EQ(Router::session_worker("/socket.io/", "GET /socket.io/?EIO=4&transport=polling&sid=AAxyz HTTP/1.1\r\n"), 0);
  EXPECT_EQ(Router::session_worker("/socket.io/", "POST /socket.io/?EIO=4&sid=AQxyz&t=1 HTTP/1.1\r\n"), 1);
  EXPECT_EQ(Router::session_worker("/socket.io/", "GET /socket.io?sid=BAxyz HTTP/1.1"), 4);  // no trailing slash
  EXPECT_EQ(Router::session_worker("/rt/", "GET /rt/?EIO=4&sid=AQ HTTP/1.1"), 1);
}

TEST(Router, NoSessionMeansAnyWorker) {
  EXPECT_EQ(Router::session_worker("/socket.io/", "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n"), -1);
  EXPECT_EQ(Router::session_worker("/socket.io/", "GET /other/?sid=AQ HTTP/1.1\r\n"), -1);  // not Engine.IO
  EXPECT_EQ(Router::session_worker("/socket.io/", "GET /socket.io/?xsid=AQ HTTP/1.1\r\n"), -1);
  EXPECT_EQ(Router::session_worker("/socket.io/", "GET /socket.io/?sid=A HTTP/1.1\r\n"), -1);  // too short
  EXPECT_EQ(Router::session_worker("/socket.io/", "GET /socket.io/?sid=%%zz HTTP/1.1\r\n"), -1);
  EXPECT_EQ(Router::session_worker("/socket.io/", "garbage"), -1);
  EXPECT_EQ(Router::session_worker("/socket.io/", ""), -1);
  // A sid in the headers, not the URL, does not count.
  EXPECT_EQ(Router::session_worker("/socket.io/", "GET /socket.io/?EIO=4 HTTP/1.1\r\nX: ?sid=AQ\r\n"), -1);
}

TEST(Router, ALineIsCompleteAtItsNewlineOrWhenTooLong) {
  EXPECT_FALSE(Router::line_complete(""));
  EXPECT_FALSE(Router::line_complete("GET /socket.io/?sid=AQ HTTP/1.1"));
  EXPECT_TRUE(Router::line_complete("GET / HTTP/1.1\r\n"));
  EXPECT_TRUE(Router::line_complete(std::string(Router::kMaxLine, 'a')));
}

}  // namespace
}  // namespace dr
