// The error log: one file (or stderr) per process, lines
// "2026/11/25 22:01:18 [warn] 1234#0: text". Reopened on SIGUSR1.
#pragma once

#include <string>
#include <string_view>

#include "depth-realtime/module.h"

namespace dr::logging {

// "stderr" or a path; opened in append mode. False + err when it cannot be opened.
bool open(const std::string& target, LogLevel min_level, std::string& err);
bool reopen();                    // after log rotation
void set_level(LogLevel level);
void set_slot(int slot);          // -1 for the master
bool parse_level(std::string_view name, LogLevel& out);
int fd();                         // where lines go now

}  // namespace dr::logging
