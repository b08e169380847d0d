// dr::Handshake keeps the handshake request as one text: what a module reads
// from it, and what handshake_json shows (fetch_sockets, the admin UI), are
// the request's own headers and query, in order, repeats and odd bytes too.
#include <gtest/gtest.h>

#include <string>

#include "depth-realtime/module.h"

namespace dr {
namespace {

Handshake sample() {
  Handshake h;
  h.address = "10.0.0.7";
  h.secure = true;
  h.issued_ms = 1714566690123;
  h.set_url("/socket.io/?EIO=4&transport=websocket&room=a%20b");
  h.add_header("host", "example.com");
  h.add_header("x-forwarded-for", "1.2.3.4");
  h.add_header("x-long", std::string(300, 'v'));  // a length in two bytes
  h.add_header("x-forwarded-for", "5.6.7.8");     // repeated: the first is the one read
  h.add_header("x-empty", "");
  h.add_query("EIO", "4");
  h.add_query("transport", "websocket");
  h.add_query("room", "a b");
  h.add_query("nul", std::string("a\0b", 3));
  h.shrink();
  return h;
}

TEST(Handshake, HeadersAndQueryAreFoundByName) {
  Handshake h = sample();
  EXPECT_EQ(h.url(), "/socket.io/?EIO=4&transport=websocket&room=a%20b");
  EXPECT_EQ(h.header("host"), "example.com");
  EXPECT_EQ(h.header("x-forwarded-for"), "1.2.3.4");
  EXPECT_EQ(h.header("x-long"), std::string(300, 'v'));
  ASSERT_TRUE(h.header("x-empty").has_value());
  EXPECT_EQ(*h.header("x-empty"), "");
  EXPECT_FALSE(h.header("origin").has_value());
  EXPECT_FALSE(h.header("EIO").has_value()) << "a query parameter is not a header";
  EXPECT_EQ(h.query_param("room"), "a b");
  EXPECT_EQ(h.query_param("nul"), std::string_view("a\0b", 3));
  EXPECT_FALSE(h.query_param("host").has_value()) << "a header is not a query parameter";
  EXPECT_FALSE(h.query_param("sid").has_value());
}

TEST(Handshake, EveryPairIsListedInOrder) {
  Handshake h = sample();
  Handshake::Pairs headers = h.headers();
  ASSERT_EQ(headers.size(), 5u);
  EXPECT_EQ(headers[0].first, "host");
  EXPECT_EQ(headers[3].first, "x-forwarded-for");
  EXPECT_EQ(headers[3].second, "5.6.7.8");
  EXPECT_EQ(headers[4].second, "");
  Handshake::Pairs query = h.query();
  ASSERT_EQ(query.size(), 4u);
  EXPECT_EQ(query[0], (std::pair<std::string_view, std::string_view>("EIO", "4")));
  EXPECT_EQ(query[3].second.size(), 3u);
}

TEST(Handshake, AnEmptyOneHasNothing) {
  Handshake h;
  EXPECT_EQ(h.url(), "");
  EXPECT_FALSE(h.header("host").has_value());
  EXPECT_TRUE(h.headers().empty());
  EXPECT_TRUE(h.query().empty());
}

TEST(Handshake, JsonShowsItAsSocketIoDoes) {
  Json j = handshake_json(sample());
  char* text = json_dumps(j.get(), JSON_PRESERVE_ORDER | JSON_COMPACT);
  std::string got = text;
  free(text);
  // A repeated header shows its last value, in the place of its first.
  std::string want = "{\"headers\":{\"host\":\"example.com\",\"x-forwarded-for\":\"5.6.7.8\",\"x-long\":\"" +
                     std::string(300, 'v') +
                     "\",\"x-empty\":\"\"},\"time\":\"Wed May 01 2024 12:31:30 GMT+0000 (Coordinated Universal "
                     "Time)\",\"address\":\"10.0.0.7\",\"xdomain\":false,\"secure\":true,\"issued\":1714566690123,"
                     "\"url\":\"/socket.io/?EIO=4&transport=websocket&room=a%20b\",\"query\":{\"EIO\":\"4\","
                     "\"transport\":\"websocket\",\"room\":\"a b\",\"nul\":\"a\\u0000b\"}}";
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace dr
