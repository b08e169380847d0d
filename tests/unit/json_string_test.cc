// The JSON string writer (json_append_string) that the Socket.IO encoder and
// the Redis session record share: for any bytes, exactly what jansson's dump
// writes for that string with the encoder's flags, and refused where jansson
// refuses it (not UTF-8).
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "depth-realtime/json.h"

namespace dr {
namespace {

// jansson's text for a value (with the encoder's flags), and for a string of
// these bytes (made without its UTF-8 check, as a module may make one);
// nullopt where its dump refuses it.
std::optional<std::string> jansson_dump(const json_t* v) {
  char* text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
  if (!text) return std::nullopt;
  std::string out = text;
  free(text);
  return out;
}
std::optional<std::string> jansson_text(std::string_view s) {
  return jansson_dump(Json(json_stringn_nocheck(s.data(), s.size())).get());
}

std::optional<std::string> ours(std::string_view s) {
  std::string out = "<";
  if (!json_append_string(s, out)) {
    EXPECT_EQ(out, "<") << "nothing appended when refused";
    return std::nullopt;
  }
  EXPECT_EQ(out.substr(0, 1), "<") << "appended after what was there";
  return out.substr(1);
}

void expect_as_jansson(std::string_view s) {
  auto want = jansson_text(s);
  EXPECT_EQ(ours(s), want) << "bytes: " << testing::PrintToString(std::string(s));
  EXPECT_EQ(json_utf8_valid(s), want.has_value()) << testing::PrintToString(std::string(s));
}

TEST(JsonString, AsciiQuotesAndBackslashes) {
  for (const char* s : {"", "plain ascii", " ", "quote \" inside", "\"", "back\\slash", "\\\\", "\\\"", "\x7f del"})
    expect_as_jansson(s);
  EXPECT_EQ(ours("a\"b\\c"), "\"a\\\"b\\\\c\"");
}

TEST(JsonString, SlashIsNotEscaped) {
  expect_as_jansson("sl/ash </script>");
  EXPECT_EQ(ours("/"), "\"/\"");
}

TEST(JsonString, EveryControlCharacter) {
  std::string all;
  for (int c = 0; c < 0x20; c++) {
    std::string one(1, char(c));
    expect_as_jansson(one);
    expect_as_jansson("a" + one + "b");
    all += one;
  }
  expect_as_jansson(all);
  EXPECT_EQ(ours("\t\n\r\b\f\x01\x1f"), "\"\\t\\n\\r\\b\\f\\u0001\\u001F\"");  // capitals, as jansson
}

TEST(JsonString, EmbeddedNul) {
  expect_as_jansson(std::string_view("nul\0inside", 10));
  expect_as_jansson(std::string_view("\0", 1));
  EXPECT_EQ(ours(std::string_view("a\0b", 3)), "\"a\\u0000b\"");
}

TEST(JsonString, MultiByteUtf8AsItIs) {
  for (const char* s : {"caf\xc3\xa9", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xe6\x97\xa5\xe6\x9c\xac",
                        "\xe2\x80\xa8\xe2\x80\xa9", "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbf",
                        "emoji \xf0\x9f\x98\x80", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "\"\xc3\xa9\\\n\xf0\x9f\x8e\x89"})
    expect_as_jansson(s);
  EXPECT_EQ(ours("\xc3\xa9"), "\"\xc3\xa9\"");
}

TEST(JsonString, InvalidUtf8IsRefusedAsJanssonRefusesIt) {
  // A lone continuation byte, overlong forms, surrogates, past U+10FFFF, cut
  // sequences, bytes never in UTF-8; alone and between valid text.
  for (const char* s : {"\x80", "\xbf", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xe0\x9f\xbf", "\xed\xa0\x80",
                        "\xed\xbf\xbf", "\xf0\x80\x80\xaf", "\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80",
                        "\xc3", "\xe6\x97", "\xf0\x9f\x98", "\xc3\x28", "\xe2\x28\xa1", "\xfe", "\xff"}) {
    EXPECT_FALSE(ours(s)) << testing::PrintToString(std::string(s));
    expect_as_jansson(s);
    expect_as_jansson(std::string("ok \xc3\xa9 ") + s + " after");
  }
}

// Random strings from pieces that make UTF-8 hard (lead and continuation
// bytes of every kind, controls, quotes, backslashes, NULs), against jansson.
TEST(JsonString, RandomBytesAsJansson) {
  const std::vector<std::string> pieces = {
      "a", "Z", " ", "/", "\"", "\\", std::string(1, '\0'), "\x01", "\x1f", "\n", "\x7f", "\x80", "\xbf", "\xc0", "\xc2",
      "\xdf", "\xe0", "\xe0\xa0", "\xed", "\xed\xa0", "\xef", "\xf0", "\xf0\x90", "\xf4", "\xf4\x90", "\xf5", "\xff",
      "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xed\x9f\xbf", "\xee\x80\x80"};
  std::mt19937 rng(12);  // fixed: the same strings every run
  std::uniform_int_distribution<size_t> piece(0, pieces.size() - 1), length(0, 12);
  int refused = 0;
  for (int n = 0; n < 20000; n++) {
    std::string s;
    for (size_t k = length(rng); k > 0; k--) s += pieces[piece(rng)];
    auto want = jansson_text(s);
    refused += !want;
    ASSERT_EQ(ours(s), want) << testing::PrintToString(s);
  }
  EXPECT_GT(refused, 1000);  // both kinds were tried
  EXPECT_LT(refused, 19000);
}

// The encoder's writer (json_append) writes strings and keys with it: the
// same bytes as jansson's dump of the whole value, refused as a whole.
TEST(JsonString, ValuesAndKeysInJsonAppend) {
  Json obj(json_object());
  json_object_set_new(obj.get(), "k\xc3\xa9y \"q\" \n", json_string("v\xe2\x80\xa8 \\ \x01 \xf0\x9f\x98\x80"));
  json_object_set_new(obj.get(), "plain", json_stringn("nul\0x", 5));
  std::string out;
  ASSERT_TRUE(json_append(obj.get(), out));
  EXPECT_EQ(out, jansson_dump(obj.get()));
  // A string value that is not UTF-8: nothing written, as jansson writes nothing.
  Json bad(json_array());
  json_array_append_new(bad.get(), json_stringn_nocheck("\xed\xa0\x80", 3));
  out = "kept";
  EXPECT_FALSE(json_append(bad.get(), out));
  EXPECT_EQ(out, "kept");
  // A key that is not UTF-8 is left to jansson's dump of the whole value,
  // whatever that writes (2.14 writes a lone quote for it).
  Json bad_key(json_object());
  json_object_setn_new_nocheck(bad_key.get(), "\xed\xa0\x80", 3, json_true());
  out.clear();
  EXPECT_EQ(json_append(bad_key.get(), out), jansson_dump(bad_key.get()).has_value());
  EXPECT_EQ(out, jansson_dump(bad_key.get()).value_or(""));
}

}  // namespace
}  // namespace dr
