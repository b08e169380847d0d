// jansson on the kept blocks reads and writes as on malloc's.
#include <gtest/gtest.h>

#include <string>

#include "core/json_blocks.h"
#include "depth-realtime/json.h"

namespace {

TEST(JsonBlocks, ValuesSurviveBlocksGoingRound) {
  // Made before the install: freed after it, onto the lists or to malloc.
  dr::Json before = dr::json_parse(R"({"a":[1,2,{"b":"x"}]})");
  dr::json_blocks::install();
  std::string text = R"({"id":"1700000000000-0","conversationId":"b0","senderId":"u0","content":")" +
                     std::string(300, 'y') + R"(","type":"text","metadata":{"k":[true,null,1.5,"v"]}})";
  for (int round = 0; round < 3; round++) {
    dr::Json v = dr::json_parse(text);
    ASSERT_TRUE(v);
    EXPECT_EQ(dr::json_text(v.get()), text);
    json_object_set_new(v.get(), "extra", json_string("z"));
    EXPECT_EQ(json_string_value(json_object_get(v.get(), "extra")), std::string("z"));
  }
  EXPECT_EQ(dr::json_text(before.get()), R"({"a":[1,2,{"b":"x"}]})");
  before.reset();
  // json_dumps' text is a malloc block: free() takes it.
  dr::Json small = dr::json_parse("[1]");
  char* dumped = json_dumps(small.get(), JSON_COMPACT);
  ASSERT_NE(dumped, nullptr);
  EXPECT_STREQ(dumped, "[1]");
  free(dumped);
}

}  // namespace
