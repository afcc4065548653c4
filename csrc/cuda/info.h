// CUDA build and runtime facts; safe to call on machines without a GPU or driver.
#pragma once
#include <string>

namespace summit {
bool cuda_built();
int cuda_device_count();
bool cuda_available();
std::string cuda_status();
}  // namespace summit
