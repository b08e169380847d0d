// server_batch_events (worker/core/config.cc): additive, and allowed at the
// top level, where modules-enabled/*.conf is read, so that a module's conf
// brings its batching rule along (conf/modules-available/projects.conf).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "core/config.h"

using namespace dr;

namespace {

std::unique_ptr<Config> load(const std::string& text, std::string& err) {
  char path[] = "/tmp/dr-conf-batch-XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << text;
  auto cfg = load_config(path, {}, err);
  std::remove(path);
  return cfg;
}

std::vector<std::string> rules(const Config& cfg) {
  std::vector<std::string> out;
  for (auto& r : cfg.core.server_batch_events)
    out.push_back(r.field.empty() ? r.event : r.event + "[" + r.field + "=" + r.value + "]");
  return out;
}

}  // namespace

TEST(ConfServerBatch, TopLevelAndServerRulesAddUp) {
  std::string err;
  auto cfg = load(
      "server_batch_events project:update[kind=progress];\n"
      "server {\n  listen 127.0.0.1:3000;\n  server_batch_events user:typing;\n"
      "  server_batch_events a b[x=y];\n}\n",
      err);
  ASSERT_TRUE(cfg) << err;
  EXPECT_EQ(rules(*cfg), (std::vector<std::string>{"project:update[kind=progress]", "user:typing", "a", "b[x=y]"}));
}

TEST(ConfServerBatch, WithoutTheDirectiveNothingIsBatched) {
  std::string err;
  auto cfg = load("server {\n  listen 127.0.0.1:3000;\n}\n", err);
  ASSERT_TRUE(cfg) << err;
  EXPECT_TRUE(rules(*cfg).empty());
}

TEST(ConfServerBatch, AMalformedRuleIsRefusedWithItsText) {
  std::string err;
  EXPECT_FALSE(load("server {\n  listen 127.0.0.1:3000;\n  server_batch_events ev[kind];\n}\n", err));
  EXPECT_NE(err.find("invalid \"ev[kind]\""), std::string::npos) << err;
}
