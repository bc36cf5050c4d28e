# Finds PCRE2's 8-bit library (Debian: libpcre2-dev) and defines Pcre2::Pcre2. find_path /
# find_library rather than pkg-config: on the GPU machine the Debian packages are unpacked into
# a prefix (.deps/root/usr, passed in CMAKE_PREFIX_PATH) that pkg-config does not search.
find_path(Pcre2_INCLUDE_DIR pcre2.h)
find_library(Pcre2_LIBRARY NAMES pcre2-8)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Pcre2 REQUIRED_VARS Pcre2_LIBRARY Pcre2_INCLUDE_DIR)
if(Pcre2_FOUND AND NOT TARGET Pcre2::Pcre2)
  add_library(Pcre2::Pcre2 UNKNOWN IMPORTED)
  set_target_properties(Pcre2::Pcre2 PROPERTIES
    IMPORTED_LOCATION "${Pcre2_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${Pcre2_INCLUDE_DIR}"
    INTERFACE_COMPILE_DEFINITIONS "PCRE2_CODE_UNIT_WIDTH=8")
endif()
mark_as_advanced(Pcre2_INCLUDE_DIR Pcre2_LIBRARY)
