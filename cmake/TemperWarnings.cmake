# Warnings for temper's own code (never for dependencies' headers, which are SYSTEM includes).
function(temper_set_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
endfunction()
