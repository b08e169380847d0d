depth_realtime_add_module(ratelimit ${CMAKE_CURRENT_LIST_DIR}/ratelimit.cc ${CMAKE_CURRENT_LIST_DIR}/lease.cc)
