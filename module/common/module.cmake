# Code the application modules share (access checks, timestamps, stats,
# the notification inbox, binary in stored JSON, entries stored once per
# client key), as a static library linked into each of them; hidden, so that
# two modules never bind to each other's copy.
add_library(dr_app STATIC
  ${CMAKE_CURRENT_LIST_DIR}/app.cc
  ${CMAKE_CURRENT_LIST_DIR}/idempotent.cc
  ${CMAKE_CURRENT_LIST_DIR}/inbox.cc
  ${CMAKE_CURRENT_LIST_DIR}/stats.cc
  ${CMAKE_CURRENT_LIST_DIR}/stored_json.cc)
target_include_directories(dr_app PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(dr_app PUBLIC depth-realtime::api OpenSSL::Crypto)
set_target_properties(dr_app PROPERTIES POSITION_INDEPENDENT_CODE ON
  CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
