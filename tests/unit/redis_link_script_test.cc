// Scripts go by their SHA1; a Redis that lost them (SCRIPT FLUSH) answers
// NOSCRIPT, and the link sends the script again as EVAL with the same
// arguments, the caller seeing only the EVAL's reply. The Redis here is a
// fake on loopback that answers from a script of its own.
#include <gtest/gtest.h>
#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "cluster/lua_scripts.h"
#include "cluster/recovery_lua.h"
#include "cluster/redis_link.h"
#include "core/timers.h"

namespace {

using dr::cluster::RedisLink;
namespace lua = dr::cluster::lua;

// A Redis that has no script until an EVAL: EVALSHA is answered NOSCRIPT
// until then, :7 after; EVAL :42; SUBSCRIBE as Redis would; anything else +OK.
class FakeRedis {
 public:
  explicit FakeRedis(uv_loop_t* loop) : loop_(loop) {
    uv_tcp_init(loop, &server_);
    server_.data = this;
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_bind(&server_, reinterpret_cast<const sockaddr*>(&addr), 0);
    uv_listen(reinterpret_cast<uv_stream_t*>(&server_), 8, [](uv_stream_t* s, int) {
      static_cast<FakeRedis*>(s->data)->accept();
    });
    sockaddr_storage bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(&server_, reinterpret_cast<sockaddr*>(&bound), &len);
    port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }
  ~FakeRedis() {
    for (auto& c : conns_) uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&server_), nullptr);
    uv_run(loop_, UV_RUN_NOWAIT);
  }

  int port = 0;
  bool loaded = false;
  std::vector<std::vector<std::string>> seen;  // every command but PING, in order

 private:
  struct Conn {
    uv_tcp_t tcp{};
    FakeRedis* fake = nullptr;
    std::string in;
  };

  void accept() {
    auto c = std::make_unique<Conn>();
    c->fake = this;
    uv_tcp_init(loop_, &c->tcp);
    c->tcp.data = c.get();
    uv_accept(reinterpret_cast<uv_stream_t*>(&server_), reinterpret_cast<uv_stream_t*>(&c->tcp));
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->tcp),
        [](uv_handle_t*, size_t, uv_buf_t* b) {
          static char buf[65536];
          *b = uv_buf_init(buf, sizeof buf);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
          auto* c = static_cast<Conn*>(s->data);
          if (n <= 0) return;
          c->in.append(b->base, size_t(n));
          c->fake->serve(*c);
        });
    conns_.push_back(std::move(c));
  }

  // One complete RESP array off the front of `in`, or false.
  static bool parse(std::string& in, std::vector<std::string>& argv) {
    size_t at = 0;
    auto line = [&](long& n) {
      size_t end = in.find("\r\n", at);
      if (end == std::string::npos) return false;
      n = std::stol(in.substr(at + 1, end - at - 1));
      at = end + 2;
      return true;
    };
    long count = 0;
    if (in.empty() || !line(count)) return false;
    argv.clear();
    for (long i = 0; i < count; i++) {
      long len = 0;
      if (!line(len) || in.size() < at + size_t(len) + 2) return false;
      argv.push_back(in.substr(at, size_t(len)));
      at += size_t(len) + 2;
    }
    in.erase(0, at);
    return true;
  }

  void serve(Conn& c) {
    std::vector<std::string> argv;
    std::string out;
    while (parse(c.in, argv)) {
      const std::string& verb = argv[0];
      if (verb == "PING") {
        out += "+PONG\r\n";
        continue;
      }
      seen.push_back(argv);
      if (verb == "EVALSHA") {
        out += loaded ? ":7\r\n" : "-NOSCRIPT No matching script. Please use EVAL.\r\n";
      } else if (verb == "EVAL") {
        loaded = true;
        out += ":42\r\n";
      } else if (verb == "SUBSCRIBE" || verb == "PSUBSCRIBE") {
        std::string kind = verb == "SUBSCRIBE" ? "subscribe" : "psubscribe";
        for (size_t i = 1; i < argv.size(); i++)
          out += "*3\r\n$" + std::to_string(kind.size()) + "\r\n" + kind + "\r\n$" + std::to_string(argv[i].size()) +
                 "\r\n" + argv[i] + "\r\n:" + std::to_string(i) + "\r\n";
      } else {
        out += "+OK\r\n";
      }
    }
    if (out.empty()) return;
    uv_buf_t b = uv_buf_init(out.data(), unsigned(out.size()));
    uv_try_write(reinterpret_cast<uv_stream_t*>(&c.tcp), &b, 1);
  }

  uv_loop_t* loop_;
  uv_tcp_t server_{};
  std::vector<std::unique_ptr<Conn>> conns_;
};

struct LinkOnFake : ::testing::Test {
  uv_loop_t loop{};
  std::unique_ptr<dr::Timers> timers;
  std::unique_ptr<FakeRedis> fake;
  std::unique_ptr<RedisLink> link;

  void SetUp() override {
    uv_loop_init(&loop);
    timers = std::make_unique<dr::Timers>(&loop);
    fake = std::make_unique<FakeRedis>(&loop);
    dr::CoreConf::Redis conf;
    conf.host = "127.0.0.1";
    conf.port = fake->port;
    link = std::make_unique<RedisLink>(&loop, *timers, conf, [](std::string_view, std::string_view) {},
                                       [](bool) {});
    link->start();
    run_until([&] { return link->commands_up(); });
  }
  void TearDown() override {
    link.reset();
    fake.reset();
    timers.reset();
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
  }
  // Bounded in loop turns, not in time.
  template <class F>
  void run_until(F done) {
    for (int i = 0; i < 1000 && !done(); i++) uv_run(&loop, UV_RUN_ONCE);
    ASSERT_TRUE(done());
  }
};

TEST_F(LinkOnFake, EveryScriptIsLoadedWhenTheConnectionIsUp) {
  size_t loads = 0;
  for (auto& cmd : fake->seen)
    if (cmd.size() == 3 && cmd[0] == "SCRIPT" && cmd[1] == "LOAD") loads++;
  EXPECT_EQ(loads, lua::scripts().size());
}

TEST_F(LinkOnFake, NoscriptSendsTheScriptAgainAsEvalWithTheSameArguments) {
  fake->seen.clear();
  std::string_view sha = lua::sha(lua::kRecordScript);
  ASSERT_EQ(sha.size(), 40u);
  std::vector<long long> replies;
  auto record = [&](redisReply* r) { replies.push_back(r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1); };
  ASSERT_TRUE(link->command({"EVALSHA", sha, "1", "stream", "minid", "offset"}, record));
  ASSERT_TRUE(link->command({"GET", "after"}, record));
  run_until([&] { return replies.size() == 2; });
  ASSERT_EQ(fake->seen.size(), 3u);
  EXPECT_EQ(fake->seen[0], (std::vector<std::string>{"EVALSHA", std::string(sha), "1", "stream", "minid", "offset"}));
  EXPECT_EQ(fake->seen[1], (std::vector<std::string>{"GET", "after"}));
  EXPECT_EQ(fake->seen[2],
            (std::vector<std::string>{"EVAL", lua::kRecordScript, "1", "stream", "minid", "offset"}));
  EXPECT_EQ(replies, (std::vector<long long>{-1, 42}));  // the GET's +OK, then the EVAL's
  // Loaded again: EVALSHA is enough.
  ASSERT_TRUE(link->command({"EVALSHA", sha, "1", "stream"}, record));
  run_until([&] { return replies.size() == 3; });
  EXPECT_EQ(replies.back(), 7);
  EXPECT_EQ(fake->seen.back()[0], "EVALSHA");
  EXPECT_EQ(link->pending_bytes(), 0u);
}

TEST(LuaScripts, EachHasItsOwnShaAndIsFoundByIt) {
  for (auto& s : lua::scripts()) {
    EXPECT_EQ(std::string_view(s.sha).size(), 40u);
    EXPECT_EQ(lua::body_of(s.sha), s.body);
  }
  EXPECT_TRUE(lua::body_of("0000000000000000000000000000000000000000").empty());
  EXPECT_NE(lua::sha(lua::kRecordScript), lua::sha(lua::kRepublishScript));
}

}  // namespace
