// Replies parsed with the pooled object functions read as hiredis' own.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <string>
#include <string_view>

#include "cluster/reply_pool.h"

using namespace std::string_view_literals;

namespace {

struct Reader {
  redisReader* r = redisReaderCreateWithFunctions(dr::cluster::pooled_replies());
  ~Reader() { redisReaderFree(r); }
  redisReply* read(std::string_view wire) {
    EXPECT_EQ(redisReaderFeed(r, wire.data(), wire.size()), REDIS_OK);
    void* reply = nullptr;
    EXPECT_EQ(redisReaderGetReply(r, &reply), REDIS_OK);
    return static_cast<redisReply*>(reply);
  }
  void done(redisReply* reply) { r->fn->freeObject(reply); }
};

std::string_view text(const redisReply* r) { return {r->str, r->len}; }

TEST(RedisReplyPool, ScalarsReadAsHiredisOwn) {
  Reader rd;
  redisReply* s = rd.read("$5\r\nhel\0o\r\n"sv);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->type, REDIS_REPLY_STRING);
  EXPECT_EQ(text(s), std::string_view("hel\0o", 5));
  EXPECT_EQ(s->str[5], '\0');
  rd.done(s);
  redisReply* i = rd.read(":-42\r\n");
  EXPECT_EQ(i->type, REDIS_REPLY_INTEGER);
  EXPECT_EQ(i->integer, -42);
  rd.done(i);
  redisReply* e = rd.read("-NOSCRIPT No matching script\r\n");
  EXPECT_EQ(e->type, REDIS_REPLY_ERROR);
  EXPECT_EQ(text(e), "NOSCRIPT No matching script");
  rd.done(e);
  redisReply* st = rd.read("+OK\r\n");
  EXPECT_EQ(st->type, REDIS_REPLY_STATUS);
  EXPECT_EQ(text(st), "OK");
  rd.done(st);
  redisReply* nil = rd.read("$-1\r\n");
  EXPECT_EQ(nil->type, REDIS_REPLY_NIL);
  rd.done(nil);
}

TEST(RedisReplyPool, NestedArraysAndLargeStrings) {
  Reader rd;
  std::string big(10000, 'x');
  std::string wire = "*4\r\n$7\r\nmessage\r\n*2\r\n:1\r\n$-1\r\n*0\r\n$" + std::to_string(big.size()) + "\r\n" + big + "\r\n";
  // Fed in pieces, as a socket delivers it.
  for (size_t at = 0; at < wire.size(); at += 7)
    ASSERT_EQ(redisReaderFeed(rd.r, wire.data() + at, std::min<size_t>(7, wire.size() - at)), REDIS_OK);
  void* reply = nullptr;
  ASSERT_EQ(redisReaderGetReply(rd.r, &reply), REDIS_OK);
  auto* a = static_cast<redisReply*>(reply);
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->type, REDIS_REPLY_ARRAY);
  ASSERT_EQ(a->elements, 4u);
  EXPECT_EQ(text(a->element[0]), "message");
  ASSERT_EQ(a->element[1]->type, REDIS_REPLY_ARRAY);
  ASSERT_EQ(a->element[1]->elements, 2u);
  EXPECT_EQ(a->element[1]->element[0]->integer, 1);
  EXPECT_EQ(a->element[1]->element[1]->type, REDIS_REPLY_NIL);
  EXPECT_EQ(a->element[2]->type, REDIS_REPLY_ARRAY);
  EXPECT_EQ(a->element[2]->elements, 0u);
  EXPECT_EQ(text(a->element[3]), big);
  rd.done(a);
  // The same again, from the blocks the first one gave back.
  redisReply* b = rd.read("*2\r\n$3\r\nabc\r\n:7\r\n");
  ASSERT_EQ(b->elements, 2u);
  EXPECT_EQ(text(b->element[0]), "abc");
  EXPECT_EQ(b->element[1]->integer, 7);
  rd.done(b);
}

TEST(RedisReplyPool, ProtocolErrorFreesThePartialReply) {
  Reader rd;
  std::string_view bad = "*2\r\n$3\r\nabc\r\n!oops\r\n";
  ASSERT_EQ(redisReaderFeed(rd.r, bad.data(), bad.size()), REDIS_OK);
  void* reply = nullptr;
  EXPECT_EQ(redisReaderGetReply(rd.r, &reply), REDIS_ERR);
  EXPECT_EQ(reply, nullptr);
}

}  // namespace
