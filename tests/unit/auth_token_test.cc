// auth_jwt's token check (module/auth_jwt/token.cc), and what it remembers of
// the tokens that passed: the same answer without decoding again, but never
// past exp, before nbf, under other rules, or for a token that was refused.
#include "token.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>

#include <depth-realtime/json.h>

namespace dr::auth_jwt {
namespace {

constexpr int64_t kNowMs = 1'700'000'000'000;  // a fixed clock: the check takes the time as an argument

struct JwtFree {
  void operator()(jwt_t* j) const { jwt_free(j); }
};

// An HS256 token signed with `secret` for user `user`, with exp/nbf (seconds) when non-zero.
std::string make_token(const std::string& secret, const std::string& user, long exp = 0, long nbf = 0,
                       const char* role = "member") {
  jwt_t* raw = nullptr;
  EXPECT_EQ(jwt_new(&raw), 0);
  std::unique_ptr<jwt_t, JwtFree> jwt(raw);
  jwt_add_grant(jwt.get(), "userId", user.c_str());
  jwt_add_grant(jwt.get(), "role", role);
  jwt_add_grants_json(jwt.get(), R"({"conversations":["c1","c2"]})");
  if (exp) jwt_add_grant_int(jwt.get(), "exp", exp);
  if (nbf) jwt_add_grant_int(jwt.get(), "nbf", nbf);
  jwt_set_alg(jwt.get(), JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(secret.data()), int(secret.size()));
  char* text = jwt_encode_str(jwt.get());
  std::string out = text ? text : "";
  free(text);  // libjwt 1.10 allocates it with malloc
  return out;
}

TokenRules rules_with(const std::string& secret) {
  TokenRules r;
  r.secret = secret;
  return r;
}

Verdict check(const std::string& token, const TokenRules& rules, int64_t now_ms = kNowMs) {
  Json t(json_string(token.c_str()));
  return verify_token(t.get(), rules, now_ms);
}

TEST(AuthToken, ATokenThatPassedPassesAgainWithTheSameVerdict) {
  std::string token = make_token("s3cret", "u-same", kNowMs / 1000 + 3600);
  Verdict first = check(token, rules_with("s3cret"));
  Verdict again = check(token, rules_with("s3cret"));
  ASSERT_TRUE(first.ok) << first.why;
  ASSERT_TRUE(again.ok) << again.why;
  EXPECT_EQ(again.user_id, "u-same");
  EXPECT_EQ(again.role, "member");
  EXPECT_EQ(again.claims, first.claims);
  ASSERT_EQ(again.claims.size(), 1u);
  EXPECT_EQ(again.claims[0].first, "conversations");
  EXPECT_EQ(again.exp, first.exp);
}

TEST(AuthToken, ATokenThatPassedIsRefusedOnceItsExpIsReached) {
  const long exp = kNowMs / 1000 + 60;
  std::string token = make_token("s3cret", "u-exp", exp);
  TokenRules rules = rules_with("s3cret");
  rules.leeway_ms = 5000;
  ASSERT_TRUE(check(token, rules).ok);
  EXPECT_TRUE(check(token, rules, (exp + 4) * 1000).ok) << "within the leeway";
  Verdict late = check(token, rules, (exp + 5) * 1000);
  EXPECT_FALSE(late.ok);
  EXPECT_EQ(late.code, kInvalidToken);
  EXPECT_EQ(late.why, "expired");
}

TEST(AuthToken, ATokenThatPassedIsRefusedUnderAnotherSecret) {
  std::string token = make_token("old-secret", "u-rotated");
  ASSERT_TRUE(check(token, rules_with("old-secret")).ok);
  Verdict rotated = check(token, rules_with("new-secret"));
  EXPECT_FALSE(rotated.ok);
  EXPECT_EQ(rotated.code, kInvalidToken);
}

TEST(AuthToken, ATokenThatPassedIsRefusedWhenTheRulesAskForMore) {
  std::string token = make_token("s3cret", "u-issuer");
  ASSERT_TRUE(check(token, rules_with("s3cret")).ok);
  TokenRules stricter = rules_with("s3cret");
  stricter.issuer = "https://issuer.example";
  Verdict v = check(token, stricter);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.why, "wrong issuer");
}

TEST(AuthToken, ATokenNotYetValidIsRefusedThenPassesFromItsNbf) {
  const long nbf = kNowMs / 1000 + 30;
  std::string token = make_token("s3cret", "u-nbf", 0, nbf);
  Verdict early = check(token, rules_with("s3cret"));
  EXPECT_FALSE(early.ok);
  EXPECT_EQ(early.why, "not yet valid (nbf)");
  EXPECT_TRUE(check(token, rules_with("s3cret"), nbf * 1000).ok);
  // Remembered now; a clock that goes back still sees the nbf.
  EXPECT_FALSE(check(token, rules_with("s3cret"), kNowMs).ok);
}

TEST(AuthToken, ARefusedTokenStaysRefused) {
  std::string token = make_token("s3cret", "u-forged");
  std::string forged = token.substr(0, token.rfind('.') + 1) + "AAAA";
  for (int i = 0; i < 2; i++) {
    Verdict v = check(forged, rules_with("s3cret"));
    EXPECT_FALSE(v.ok);
    EXPECT_EQ(v.code, kInvalidToken);
  }
  EXPECT_EQ(check("", rules_with("s3cret")).code, kTokenRequired);
}

TEST(AuthToken, TokensOfManyUsersEachGetTheirOwnVerdict) {
  // More tokens than the memory has slots: each is still answered for itself.
  for (int i = 0; i < 600; i++) {
    std::string user = "u" + std::to_string(i);
    Verdict v = check(make_token("s3cret", user), rules_with("s3cret"));
    ASSERT_TRUE(v.ok) << user;
    ASSERT_EQ(v.user_id, user);
  }
  for (int i = 0; i < 600; i += 7) {
    std::string user = "u" + std::to_string(i);
    ASSERT_EQ(check(make_token("s3cret", user), rules_with("s3cret")).user_id, user);
  }
}

}  // namespace
}  // namespace dr::auth_jwt
