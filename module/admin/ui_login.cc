#include "ui_login.h"

#include <crypt.h>
#include <depth-realtime/redis.h>
#include <sys/random.h>

#include <cstdio>
#include <cstring>

#include "app.h"
#include "ui_state.h"

namespace dr::admin {
namespace {

constexpr const char* kSessionKeyPrefix = "socket.io-admin#";  // the Node RedisStore's keys
constexpr const char* kInvalidCredentials = "invalid credentials";  // the dashboard shows its login form on it
constexpr size_t kMaxPasswordBytes = 1024;
constexpr size_t kMaxPendingSessions = 1024;
constexpr size_t kMaxMemorySessions = 10000;

bool same(const char* a, const std::string& b) {
  size_t n = strlen(a);
  unsigned char diff = n != b.size();
  for (size_t i = 0; i < n && i < b.size(); i++) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// bcrypt is slow on purpose (tens of ms): it runs in libuv's thread pool.
struct BcryptJob {
  uv_work_t req{};
  std::string password;
  std::string hash;
  bool ok = false;
  std::function<void(bool)> done;
};

void bcrypt_check(std::string password, std::string hash, std::function<void(bool)> done) {
  auto job = std::make_unique<BcryptJob>();
  job->password = std::move(password);
  job->hash = std::move(hash);
  job->done = std::move(done);
  job->req.data = job.get();
  int rc = uv_queue_work(
      g_ui->w->loop(), &job->req,
      [](uv_work_t* req) {
        auto* j = static_cast<BcryptJob*>(req->data);
        auto data = std::make_unique<crypt_data>();  // ~32 KB: not on a pool thread's stack
        memset(data.get(), 0, sizeof(crypt_data));
        // crypt_rn (libxcrypt): null on failure instead of a "*0" token; and,
        // unlike crypt_r, not intercepted by ASan, whose interceptor cannot
        // reach libcrypt when a dlopen()ed module brings it.
        const char* out = crypt_rn(j->password.c_str(), j->hash.c_str(), data.get(), int(sizeof(crypt_data)));
        j->ok = out && out[0] != '*' && same(out, j->hash);
      },
      [](uv_work_t* req, int status) {
        std::unique_ptr<BcryptJob> j(static_cast<BcryptJob*>(req->data));
        try {
          j->done(status == 0 && j->ok);
        } catch (...) {
          // a refused or late CONNECT is all that can go wrong; nothing may leave libuv's callback
        }
      });
  if (rc != 0) {
    job->done(false);
    return;
  }
  (void)job.release();  // freed by the after-work callback
}

bool session_id_shape(const char* id) {
  if (strlen(id) != 16) return false;
  for (const char* p = id; *p; p++)
    if (!isxdigit(static_cast<unsigned char>(*p))) return false;
  return true;
}

void check_session(const std::string& id, std::function<void(bool)> done) {
  if (redis::configured()) {
    redis::command({"EXISTS", kSessionKeyPrefix + id},
                   [done = std::move(done)](redis::Reply r) { done(!r.error() && r.as_int() == 1); });
    return;
  }
  auto it = g_ui->sessions.find(id);
  done(it != g_ui->sessions.end() && it->second > app::now_ms());
}

std::string new_session_id() {
  unsigned char bytes[8];
  if (getrandom(bytes, sizeof bytes, 0) != ssize_t(sizeof bytes)) return {};
  char hex[17];
  for (size_t i = 0; i < sizeof bytes; i++) snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
  return std::string(hex, 16);
}

void save_session(const std::string& id) {
  uint64_t ttl_ms = conf().ui_session_ttl_ms;
  if (redis::configured()) {
    std::string key = kSessionKeyPrefix + id;
    redis::transaction({{"SET", key, "true"}, {"EXPIRE", key, std::to_string(std::max<uint64_t>(1, ttl_ms / 1000))}});
    return;
  }
  if (g_ui->sessions.size() >= kMaxMemorySessions) g_ui->sessions.erase(g_ui->sessions.begin());
  g_ui->sessions[id] = app::now_ms() + int64_t(ttl_ms);
}

void refuse(const ConnectNext& next) {
  next(ConnectError{kInvalidCredentials, Json()});
}

void login(std::weak_ptr<Socket> weak, const json_t* auth, ConnectNext next) {
  const char* user = json_str(auth, "username");
  const char* password = json_str(auth, "password");
  if (!user || !password || strlen(password) > kMaxPasswordBytes) return refuse(next);
  const AdminConf& c = conf();
  std::string want_user = c.ui_user;
  bool user_ok = same(user, want_user);  // checked after bcrypt: the time does not tell which was wrong
  bcrypt_check(password, c.ui_hash, [weak, next, user_ok, name = std::string(user)](bool ok) {
    auto s = weak.lock();
    if (!g_ui || !s) return;
    if (!ok || !user_ok) {
      logf(LogLevel::Notice, "admin-ui: login refused for \"%s\" from %s", name.c_str(),
           s->handshake().address.c_str());
      return refuse(next);
    }
    std::string id = new_session_id();
    if (id.empty()) return refuse(next);
    save_session(id);
    if (g_ui->new_sessions.size() >= kMaxPendingSessions) g_ui->new_sessions.clear();  // CONNECTs that never completed
    g_ui->new_sessions[s->id()] = id;
    logf(LogLevel::Notice, "admin-ui: \"%s\" logged in from %s", name.c_str(), s->handshake().address.c_str());
    next(std::nullopt);
  });
}

}  // namespace

void authenticate(Socket& s, ConnectNext next) {
  if (!g_ui) return refuse(next);
  if (conf().ui_auth != AdminConf::UiAuth::Basic) return next(std::nullopt);
  const json_t* auth = s.auth();
  const char* session = json_str(auth, "sessionId");
  if (!session || !session_id_shape(session)) return login(s.weak(), auth, std::move(next));
  check_session(session, [weak = s.weak(), next](bool ok) {
    auto s = weak.lock();
    if (!g_ui || !s) return;
    if (ok) return next(std::nullopt);
    login(weak, s->auth(), next);  // an expired session, and perhaps a password too
  });
}

}  // namespace dr::admin
