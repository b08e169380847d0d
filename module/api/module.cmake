depth_realtime_add_module(api ${CMAKE_CURRENT_LIST_DIR}/api.cc)
target_link_libraries(api PRIVATE dr_app)
