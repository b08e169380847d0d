// The event log (contract §6): one JSON line per client event with the user,
// the event, the time and the peer address; off, sampled or all. Lines are
// buffered and written once per loop turn; USR1 reopens the file.
#pragma once

#include <string>
#include <string_view>

namespace dr::event_log {

// `path` empty or "off": disabled. `sample` in (0, 1]: the share of events logged.
bool open(const std::string& path, double sample, std::string& err);
void reopen();
bool enabled();
void record(std::string_view nsp, std::string_view event, const std::string* user_id, std::string_view ip,
            std::string_view socket_id);
void flush();  // just before the loop polls

}  // namespace dr::event_log
