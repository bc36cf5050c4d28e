# Installs the shared library, the public headers and a CMake package so that
# `find_package(temper)` + `target_link_libraries(app PRIVATE temper::temper)` works.
include(CMakePackageConfigHelpers)

# temper_c is the C ABI (capi/): libtemper_c.so, temper.h at the include root, and a pkg-config
# file for hosts that do not use CMake (C, Rust's build.rs, Go's cgo).
install(TARGETS temper temper_c EXPORT temperTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_BINARY_DIR}/temper_c.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/temper DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_BINARY_DIR}/include/temper/build_info.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/temper)

set(TEMPER_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/temper)
install(EXPORT temperTargets NAMESPACE temper:: DESTINATION ${TEMPER_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/temperConfig.cmake.in
  ${PROJECT_BINARY_DIR}/temperConfig.cmake INSTALL_DESTINATION ${TEMPER_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/temperConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/temperConfig.cmake ${PROJECT_BINARY_DIR}/temperConfigVersion.cmake
  DESTINATION ${TEMPER_CMAKE_DIR})
