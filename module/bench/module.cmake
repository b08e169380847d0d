depth_realtime_add_module(bench ${CMAKE_CURRENT_LIST_DIR}/bench.cc)
