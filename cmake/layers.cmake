# The library's areas in dependency order: an area may include and link only the areas before it
# (and itself). The build makes one static library per area, moejet_<area>, linked to the area
# before it; cmake/check_layers.cmake fails the build on an include that goes up.
# docs/architecture.md explains the order; change both together.
set(MOEJET_LAYERS core io kernels graph nn moe models data eval recycle train report)
