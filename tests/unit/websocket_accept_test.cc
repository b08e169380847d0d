// Sec-WebSocket-Accept: the value RFC 6455 gives for its sample key, and the
// same answer every time (the digest context is reused between upgrades).
#include <gtest/gtest.h>

#include <string>

#include "http/websocket.h"

namespace dr::ws {
namespace {

TEST(WebSocketAccept, TheRfcSampleKey) {
  EXPECT_EQ(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");  // RFC 6455 1.3
}

TEST(WebSocketAccept, RepeatedAndInterleavedKeysAnswerTheSame) {
  const std::string a = accept_key("dGhlIHNhbXBsZSBub25jZQ==");
  const std::string b = accept_key("x3JJHMbDL1EzLkh9GBhXDw==");
  EXPECT_EQ(b, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");  // computed apart (SHA-1 of key and GUID, base64)
  for (int i = 0; i < 3; i++) {
    EXPECT_EQ(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), a);
    EXPECT_EQ(accept_key("x3JJHMbDL1EzLkh9GBhXDw=="), b);
  }
  EXPECT_EQ(accept_key(""), "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w=");  // no key at all: SHA-1 of the GUID alone
}

}  // namespace
}  // namespace dr::ws
