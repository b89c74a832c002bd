# Checks the layer order of cmake/layers.cmake over src/ and include/moejet/: an include that goes
# up the order is an error naming the file. Run before every build of the areas (target
# moejet_layers, which each area's library depends on) and as a CTest case.
#
#   cmake -DSOURCE_DIR=<repository> -P cmake/check_layers.cmake
include(${CMAKE_CURRENT_LIST_DIR}/layers.cmake)

if(NOT SOURCE_DIR)
  message(FATAL_ERROR "check_layers.cmake: pass -DSOURCE_DIR=<repository>")
endif()
set(problems "")
list(LENGTH MOEJET_LAYERS count)
math(EXPR last "${count} - 1")
foreach(index RANGE ${last})
  list(GET MOEJET_LAYERS ${index} area)
  file(GLOB_RECURSE files ${SOURCE_DIR}/src/${area}/*.cpp ${SOURCE_DIR}/src/${area}/*.h
       ${SOURCE_DIR}/include/moejet/${area}/*.h)
  foreach(file ${files})
    file(STRINGS ${file} includes REGEX "^#include \"moejet/[a-z_]+/")
    foreach(line ${includes})
      string(REGEX REPLACE "^#include \"moejet/([a-z_]+)/.*$" "\\1" dep "${line}")
      list(FIND MOEJET_LAYERS ${dep} dep_index)
      if(dep_index EQUAL -1 OR dep_index GREATER index)
        file(RELATIVE_PATH rel ${SOURCE_DIR} ${file})
        string(APPEND problems "\n  ${rel}: '${area}' includes moejet/${dep}/, which is not below it")
      endif()
    endforeach()
  endforeach()
endforeach()
# Every folder of src/ must have its place in the order.
file(GLOB areas LIST_DIRECTORIES true RELATIVE ${SOURCE_DIR}/src ${SOURCE_DIR}/src/*)
foreach(area ${areas})
  if(IS_DIRECTORY ${SOURCE_DIR}/src/${area})
    list(FIND MOEJET_LAYERS ${area} found)
    if(found EQUAL -1)
      string(APPEND problems "\n  src/${area}/: an area that is not in the layer order")
    endif()
  endif()
endforeach()
if(problems)
  string(REPLACE ";" " -> " order "${MOEJET_LAYERS}")
  message(FATAL_ERROR "layer order violated (${order}):${problems}")
endif()
