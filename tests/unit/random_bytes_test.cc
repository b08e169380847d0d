// The buffered random source behind ids: draws differ, a draw may straddle a
// refill, and a forked child never repeats the bytes its parent still holds.
#include "core/random_bytes.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <string>

namespace dr {
namespace {

std::string draw(size_t n) {
  std::string s(n, '\0');
  random_bytes(reinterpret_cast<uint8_t*>(s.data()), n);
  return s;
}

TEST(RandomBytes, DrawsAreDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 2000; i++) EXPECT_TRUE(seen.insert(draw(10)).second);
}

TEST(RandomBytes, DrawsStraddleAndSpanRefills) {
  // 7-byte draws do not divide 4096: some straddle a refill. One draw larger
  // than the buffer spans several.
  std::set<std::string> seen;
  for (int i = 0; i < 3000; i++) EXPECT_TRUE(seen.insert(draw(7)).second);
  std::string big = draw(3 * 4096 + 5);
  // Not all zero, and the four 4 KB stretches differ from each other.
  EXPECT_NE(big, std::string(big.size(), '\0'));
  EXPECT_NE(big.substr(0, 4096), big.substr(4096, 4096));
  EXPECT_NE(big.substr(4096, 4096), big.substr(8192, 4096));
  EXPECT_EQ(draw(0), "");
}

TEST(RandomBytes, ForkedChildDoesNotRepeatTheParentsBytes) {
  draw(1);  // the parent's buffer now holds bytes not handed out yet
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string s = draw(32);
    _exit(write(fds[1], s.data(), s.size()) == ssize_t(s.size()) ? 0 : 1);
  }
  close(fds[1]);
  std::string child(32, '\0');
  size_t got = 0;
  while (got < child.size()) {
    ssize_t n = read(fds[0], child.data() + got, child.size() - got);
    if (n <= 0) break;
    got += size_t(n);
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_EQ(got, child.size());
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_NE(child, draw(32));  // the parent's next 32 bytes
}

}  // namespace
}  // namespace dr
