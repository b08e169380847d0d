// The payload validation modules use (include/depth-realtime/validate.h).
#include <gtest/gtest.h>

#include "depth-realtime/validate.h"

using namespace dr::schema;

namespace {

const Table kChat = {
    {"chat:message",
     {{"conversationId", Kind::Id, true},
      {"content", Kind::String, true, 1, 10000},
      {"type", Kind::String, false, 0, 0, {"text", "image", "file"}},
      {"metadata", Kind::Object, false}}},
    {"project:progress", {{"projectId", Kind::Id, true}, {"progress", Kind::Number, true, 0, 100}}},
    {"chat:history", {{"conversationId", Kind::Id, true}, {"limit", Kind::Integer, false, 1, 1e9}}},
    {"project:comment", {{"projectId", Kind::Id, true}, {"attachments", Kind::Array, false, 0, 10}}},
};

std::string check(const char* event, const char* json) {
  dr::Json v = dr::json_parse(json);
  std::string details;
  return validate(v.get(), *kChat.find(event), details) ? "ok" : details;
}

}  // namespace

TEST(Validate, AcceptsAWellFormedPayloadAndIgnoresExtraFields) {
  EXPECT_EQ(check("chat:message", R"({"conversationId":"c1","content":"hi","type":"text","extra":1})"), "ok");
  EXPECT_EQ(check("chat:message", R"({"conversationId":42,"content":"hi"})"), "ok");
}

TEST(Validate, MissingAndNullRequiredFieldsAreReported) {
  EXPECT_EQ(check("chat:message", R"({"content":"hi"})"), "conversationId: is required");
  EXPECT_EQ(check("chat:message", R"({"conversationId":null,"content":"hi"})"), "conversationId: is required");
}

TEST(Validate, NullInAnOptionalFieldMeansAbsent) {
  EXPECT_EQ(check("chat:message", R"({"conversationId":"c","content":"x","type":null,"metadata":null})"), "ok");
}

TEST(Validate, TypesLengthsEnumsAndRanges) {
  EXPECT_EQ(check("chat:message", R"({"conversationId":"c","content":""})"), "content: must not be empty");
  EXPECT_EQ(check("chat:message", R"({"conversationId":"c","content":5})"), "content: must be a string");
  EXPECT_EQ(check("chat:message", R"({"conversationId":"c","content":"x","type":"video"})"),
            "type: must be one of \"text\", \"image\", \"file\"");
  EXPECT_EQ(check("project:progress", R"({"projectId":"p","progress":101})"), "progress: must be between 0 and 100");
  EXPECT_EQ(check("project:progress", R"({"projectId":"p","progress":"50"})"), "progress: must be a number");
  EXPECT_EQ(check("chat:history", R"({"conversationId":"c","limit":1.5})"), "limit: must be an integer");
  EXPECT_EQ(check("chat:history", R"({"conversationId":"c","limit":0})"), "limit: must be between 1 and 1e+09");
  EXPECT_EQ(check("project:comment", R"({"projectId":"p","attachments":[1,2,3,4,5,6,7,8,9,10,11]})"),
            "attachments: must have at most 10 items");
}

TEST(Validate, IdsFollowTheContract) {
  EXPECT_EQ(id_string(dr::json_parse("42").get()).value_or("-"), "42");
  EXPECT_EQ(id_string(dr::json_parse("\"abc\"").get()).value_or("-"), "abc");
  EXPECT_FALSE(id_string(dr::json_parse("-1").get()));
  EXPECT_FALSE(id_string(dr::json_parse("\"\"").get()));
  EXPECT_FALSE(id_string(dr::json_parse(("\"" + std::string(129, 'a') + "\"").c_str()).get()));
  EXPECT_TRUE(id_string(dr::json_parse(("\"" + std::string(128, 'a') + "\"").c_str()).get()));
  EXPECT_FALSE(id_string(dr::json_parse("1.5").get()));
  EXPECT_FALSE(id_string(dr::json_parse("{}").get()));
}

TEST(Validate, LengthsCountAsJavaScriptDoes) {
  EXPECT_EQ(js_length("abc"), 3u);
  EXPECT_EQ(js_length("مرحبا"), 5u);          // 2-byte UTF-8, one unit each
  EXPECT_EQ(js_length("\xF0\x9F\x98\x80"), 2u);  // an emoji is a surrogate pair
}

TEST(Validate, NonObjectPayloadIsRejected) {
  EXPECT_EQ(check("chat:message", "[1]"), "payload: must be an object");
  EXPECT_EQ(check("chat:message", "\"x\""), "payload: must be an object");
}
