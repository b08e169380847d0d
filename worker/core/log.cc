#include "core/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace dr {
namespace {

struct LogState {
  std::string target = "stderr";
  int fd = STDERR_FILENO;
  LogLevel min = LogLevel::Info;
  int slot = -1;
};
LogState g_log;

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Notice: return "notice";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
    case LogLevel::Crit: return "crit";
  }
  return "?";
}

int open_target(const std::string& target) {
  if (target == "stderr") return STDERR_FILENO;
  return ::open(target.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

// Under systemd (stderr is the journal), a line starts with its syslog
// priority, <3> for errors, and the journal adds the time.
int syslog_priority(LogLevel l) {
  switch (l) {
    case LogLevel::Debug: return 7;
    case LogLevel::Info: return 6;
    case LogLevel::Notice: return 5;
    case LogLevel::Warn: return 4;
    case LogLevel::Error: return 3;
    case LogLevel::Crit: return 2;
  }
  return 6;
}

bool to_journal() {
  static const bool journal = getenv("JOURNAL_STREAM") != nullptr;
  return journal && g_log.fd == STDERR_FILENO;
}

}  // namespace

void log(LogLevel level, std::string_view text) {
  if (level < g_log.min) return;
  char head[96];
  size_t n = 0;
  if (to_journal()) {
    n = size_t(snprintf(head, sizeof head, "<%d>", syslog_priority(level)));
  } else {
    time_t now = time(nullptr);
    struct tm tm;
    localtime_r(&now, &tm);
    n = strftime(head, sizeof head, "%Y/%m/%d %H:%M:%S ", &tm);
  }
  // "1234#0:" for worker 0, "1234#master:" for the master.
  char who[24] = "master";
  if (g_log.slot >= 0) snprintf(who, sizeof who, "%d", g_log.slot);
  int m = snprintf(head + n, sizeof head - n, "[%s] %d#%s: ", level_name(level), (int)getpid(), who);
  std::string line;
  line.reserve(n + m + text.size() + 1);
  line.append(head, n + m).append(text).push_back('\n');
  // One write per line so lines from several processes never interleave.
  ssize_t ignored = ::write(g_log.fd, line.data(), line.size());
  (void)ignored;
}

void logf(LogLevel level, const char* fmt, ...) {
  if (level < g_log.min) return;
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  log(level, buf);
}

namespace logging {

bool open(const std::string& target, LogLevel min_level, std::string& err) {
  int fd = open_target(target);
  if (fd < 0) {
    err = "cannot open error log \"" + target + "\": " + strerror(errno);
    return false;
  }
  if (g_log.fd != STDERR_FILENO && g_log.fd != fd) ::close(g_log.fd);
  g_log.fd = fd;
  g_log.target = target;
  g_log.min = min_level;
  return true;
}

bool reopen() {
  if (g_log.target == "stderr") return true;
  int fd = open_target(g_log.target);
  if (fd < 0) {
    logf(LogLevel::Error, "cannot reopen error log \"%s\": %s", g_log.target.c_str(), strerror(errno));
    return false;
  }
  // dup2 keeps the descriptor number, so nothing holding it goes stale.
  dup2(fd, g_log.fd);
  ::close(fd);
  return true;
}

void set_level(LogLevel level) { g_log.min = level; }
void set_slot(int slot) { g_log.slot = slot; }
int fd() { return g_log.fd; }

bool parse_level(std::string_view name, LogLevel& out) {
  static const std::pair<const char*, LogLevel> names[] = {
      {"debug", LogLevel::Debug}, {"info", LogLevel::Info},   {"notice", LogLevel::Notice},
      {"warn", LogLevel::Warn},   {"error", LogLevel::Error}, {"crit", LogLevel::Crit}};
  for (auto& [n, l] : names)
    if (name == n) {
      out = l;
      return true;
    }
  return false;
}

}  // namespace logging
}  // namespace dr
