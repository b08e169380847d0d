// The +switch-master message a sentinel publishes on a failover.
#include <gtest/gtest.h>

#include "cluster/redis_sentinel.h"

using dr::cluster::RedisSentinel;

TEST(RedisSentinel, ParsesSwitchMaster) {
  std::string host;
  int port = 0;
  ASSERT_TRUE(RedisSentinel::parse_switch("mymaster 127.0.0.1 6379 127.0.0.2 6380", "mymaster", host, port));
  EXPECT_EQ(host, "127.0.0.2");
  EXPECT_EQ(port, 6380);
  ASSERT_TRUE(RedisSentinel::parse_switch("m ::1 1 ::2 26379", "m", host, port));
  EXPECT_EQ(host, "::2");
  EXPECT_EQ(port, 26379);
}

TEST(RedisSentinel, IgnoresOtherMastersAndBadBodies) {
  std::string host = "kept";
  int port = 1;
  EXPECT_FALSE(RedisSentinel::parse_switch("other 127.0.0.1 6379 127.0.0.2 6380", "mymaster", host, port));
  EXPECT_FALSE(RedisSentinel::parse_switch("mymaster 127.0.0.1 6379 127.0.0.2", "mymaster", host, port));
  EXPECT_FALSE(RedisSentinel::parse_switch("mymaster 127.0.0.1 6379 127.0.0.2 0", "mymaster", host, port));
  EXPECT_FALSE(RedisSentinel::parse_switch("mymaster 127.0.0.1 6379 127.0.0.2 65536", "mymaster", host, port));
  EXPECT_FALSE(RedisSentinel::parse_switch("mymaster 127.0.0.1 6379 127.0.0.2 6380x", "mymaster", host, port));
  EXPECT_FALSE(RedisSentinel::parse_switch("mymaster 127.0.0.1 6379  6380", "mymaster", host, port));
  EXPECT_FALSE(RedisSentinel::parse_switch("", "mymaster", host, port));
  EXPECT_EQ(host, "kept");
  EXPECT_EQ(port, 1);
}
