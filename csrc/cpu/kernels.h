// The two native CPU per-batch ops (SPEC.md A and B). Arguments are raw pointers and
// geometry, already validated by the bindings (bind_args.cpp); both run without the GIL.
#pragma once
#include <cstdint>

#include "cpu/common.h"

namespace summit {

void activation_update(const ActivationArgs& a);
InfluenceStats influence_update(const InfluenceArgs& a);

}  // namespace summit
