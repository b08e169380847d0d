depth_realtime_add_module(notifications ${CMAKE_CURRENT_LIST_DIR}/notifications.cc)
target_link_libraries(notifications PRIVATE dr_app)
