# Finds sentencepiece and defines the imported target SentencePiece::SentencePiece.
#
# Two accepted forms, because of one clash (../docs/architecture.md, "sentencepiece"):
# - TEMPER_SENTENCEPIECE_ROOT names a static build made by scripts/deps.sh from Debian's source
#   package against the system protobuf. Debian's libsentencepiece.so carries its own protobuf
#   3.14 and crashes any process that also loads Debian's libtorch (protobuf 3.21); the static
#   build shares libtorch's protobuf instead. This is the CPU (CI) route.
# - Otherwise the shared library found on the prefix path (the GPU machine: its libtorch does not
#   export protobuf, and Debian's libsentencepiece runs beside it).

if(TEMPER_SENTENCEPIECE_ROOT)
  find_path(SentencePiece_INCLUDE_DIR sentencepiece_processor.h
            PATHS "${TEMPER_SENTENCEPIECE_ROOT}/include" NO_DEFAULT_PATH)
  find_library(SentencePiece_LIBRARY NAMES libsentencepiece.a
               PATHS "${TEMPER_SENTENCEPIECE_ROOT}/lib" "${TEMPER_SENTENCEPIECE_ROOT}/lib64"
               NO_DEFAULT_PATH)
  set(SentencePiece_STATIC ON)
else()
  find_path(SentencePiece_INCLUDE_DIR sentencepiece_processor.h)
  find_library(SentencePiece_LIBRARY NAMES sentencepiece)
  set(SentencePiece_STATIC OFF)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(SentencePiece REQUIRED_VARS SentencePiece_LIBRARY SentencePiece_INCLUDE_DIR)

if(SentencePiece_FOUND AND NOT TARGET SentencePiece::SentencePiece)
  add_library(SentencePiece::SentencePiece UNKNOWN IMPORTED)
  set_target_properties(SentencePiece::SentencePiece PROPERTIES
    IMPORTED_LOCATION "${SentencePiece_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${SentencePiece_INCLUDE_DIR}")
  if(SentencePiece_STATIC)
    # Link the full libprotobuf (the one libtorch loads), not protobuf-lite: one protobuf per process.
    find_package(Protobuf REQUIRED)
    find_package(Threads REQUIRED)
    set_property(TARGET SentencePiece::SentencePiece APPEND PROPERTY
      INTERFACE_LINK_LIBRARIES protobuf::libprotobuf Threads::Threads)
  endif()
endif()
mark_as_advanced(SentencePiece_INCLUDE_DIR SentencePiece_LIBRARY)
