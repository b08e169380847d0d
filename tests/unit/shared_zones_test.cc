// The shared zones (worker/core/shared_zones.cc): what a process forked after
// the declarations writes, the master reads; a reload declaring a zone again
// with the same size keeps it and its contents, another size starts afresh,
// a refused reload changes nothing.
#include "core/shared_zones.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

namespace dr {
namespace {

class SharedZones : public ::testing::Test {
 protected:
  void SetUp() override { declare_and_commit({}); }
  void TearDown() override { declare_and_commit({}); }

  using Zones = std::initializer_list<std::pair<const char*, size_t>>;
  // A configuration's declarations, not committed yet.
  static void declare(Zones zs) {
    zones::begin();
    std::string err;
    for (auto& [name, size] : zs) ASSERT_TRUE(zones::declare(name, size, err)) << err;
  }
  static void declare_and_commit(Zones zs) {
    declare(zs);
    zones::commit();
  }
};

TEST_F(SharedZones, AProcessForkedAfterwardsWritesWhatTheMasterReads) {
  declare_and_commit({{"test:a", 4096}});
  auto zone = zones::find("test:a");
  ASSERT_EQ(zone.size(), 4096u);
  EXPECT_EQ(zone[0], std::byte{0});  // zero-filled when made
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto mine = zones::find("test:a");
    memcpy(mine.data(), "from the worker", 16);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_STREQ(reinterpret_cast<const char*>(zone.data()), "from the worker");
}

TEST_F(SharedZones, AReloadWithTheSameSizeKeepsTheContentsAnotherSizeStartsAfresh) {
  declare_and_commit({{"test:kept", 100}, {"test:resized", 100}});
  memcpy(zones::find("test:kept").data(), "counts", 7);
  memcpy(zones::find("test:resized").data(), "old", 4);

  declare({{"test:kept", 100}, {"test:resized", 200}});
  EXPECT_TRUE(zones::changed());
  zones::commit();

  EXPECT_STREQ(reinterpret_cast<const char*>(zones::find("test:kept").data()), "counts");
  auto resized = zones::find("test:resized");
  ASSERT_EQ(resized.size(), 200u);
  EXPECT_EQ(resized[0], std::byte{0});
}

TEST_F(SharedZones, TheSameDeclarationsAreNoChangeAndAZoneNoLongerDeclaredGoes) {
  declare_and_commit({{"test:a", 64}, {"test:b", 64}});
  declare({{"test:a", 64}, {"test:b", 64}});
  EXPECT_FALSE(zones::changed());
  zones::abort();

  declare_and_commit({{"test:a", 64}});
  EXPECT_EQ(zones::find("test:a").size(), 64u);
  EXPECT_TRUE(zones::find("test:b").empty());
}

TEST_F(SharedZones, ARefusedReloadKeepsTheRunningZones) {
  declare_and_commit({{"test:a", 64}});
  memcpy(zones::find("test:a").data(), "kept", 5);
  declare({{"test:a", 128}, {"test:new", 64}});
  zones::abort();
  auto a = zones::find("test:a");
  ASSERT_EQ(a.size(), 64u);
  EXPECT_STREQ(reinterpret_cast<const char*>(a.data()), "kept");
  EXPECT_TRUE(zones::find("test:new").empty());
}

TEST_F(SharedZones, OneNameWithTwoSizesInOneConfigurationIsRefused) {
  zones::begin();
  std::string err;
  ASSERT_TRUE(zones::declare("test:a", 64, err));
  EXPECT_TRUE(zones::declare("test:a", 64, err));  // twice the same: one zone
  EXPECT_FALSE(zones::declare("test:a", 65, err));
  EXPECT_NE(err.find("test:a"), std::string::npos);
  zones::abort();
}

}  // namespace
}  // namespace dr
