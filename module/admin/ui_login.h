// The Admin UI's login (admin_ui_auth basic): the dashboard's form sends
// auth {username, password}, checked against a bcrypt hash in libuv's thread
// pool so the loop never waits on it, then {sessionId} after a page reload;
// sessions live in Redis under the Node store's keys (socket.io-admin#<id>)
// when Redis is configured, else in the worker.
#pragma once

#include <depth-realtime/module.h>

namespace dr::admin {

// The CONNECT hook (Identify phase) of the Admin UI's namespace. A login
// leaves its new session id in UiState::new_sessions, for the `session` event.
void authenticate(Socket& s, ConnectNext next);

}  // namespace dr::admin
