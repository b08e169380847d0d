// Redis Cluster's key slots (CRC16 of the hash tag) and the argument that
// routes each command.
#include <gtest/gtest.h>

#include "cluster/redis_cluster.h"

using dr::cluster::key_slot;
using dr::cluster::routing_key;

TEST(RedisCluster, KeySlotsAsRedisComputesThem) {
  // Redis Cluster specification's CRC16 check value, and CLUSTER KEYSLOT answers.
  EXPECT_EQ(key_slot("123456789"), 0x31C3 % 16384);
  EXPECT_EQ(key_slot("foo"), 12182);
  EXPECT_EQ(key_slot(""), 0);
  // A hash tag: the text between the first '{' and the next '}', when not empty.
  EXPECT_EQ(key_slot("{user1000}.following"), key_slot("user1000"));
  EXPECT_EQ(key_slot("depth:chat:{c1}:read"), key_slot("depth:idem:chat:2:{c1}:1:u:k"));
  EXPECT_EQ(key_slot("foo{}{bar}"), key_slot("foo{}{bar}"));    // empty tag: the whole key
  EXPECT_NE(key_slot("foo{}{bar}"), key_slot("bar"));
  EXPECT_EQ(key_slot("foo{{bar}}zap"), key_slot("{bar"));        // from the first '{'
  EXPECT_EQ(key_slot("foo{bar}{zap}"), key_slot("bar"));
  EXPECT_EQ(key_slot("{unclosed"), key_slot("{unclosed"));
}

TEST(RedisCluster, RoutesByTheFirstKey) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(routing_key(V{"GET", "k"}), "k");
  EXPECT_EQ(routing_key(V{"xadd", "s", "*", "a", "b"}), "s");
  EXPECT_EQ(routing_key(V{"SPUBLISH", "socket.io#/#", "m"}), "socket.io#/#");
  EXPECT_EQ(routing_key(V{"EVAL", "return 1", "2", "k1", "k2", "a"}), "k1");
  EXPECT_EQ(routing_key(V{"evalsha", "abc", "1", "k1"}), "k1");
  EXPECT_EQ(routing_key(V{"EVAL", "return 1", "0", "a"}), std::nullopt);  // no key: any shard
  EXPECT_EQ(routing_key(V{"EVAL", "return 1", "x"}), std::nullopt);
  EXPECT_EQ(routing_key(V{"XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"}), "s1");
  EXPECT_EQ(routing_key(V{"PUBSUB", "SHARDNUMSUB", "ch"}), "ch");
  EXPECT_EQ(routing_key(V{"PUBSUB", "NUMSUB", "ch"}), std::nullopt);
  EXPECT_EQ(routing_key(V{"PING"}), std::nullopt);
  EXPECT_EQ(routing_key(V{"CLUSTER", "SLOTS"}), std::nullopt);
  EXPECT_EQ(routing_key(V{"MULTI"}), std::nullopt);
}
