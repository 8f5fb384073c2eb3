#pragma once
// The projectors this build runs, by name.

#include <memory>
#include <string>
#include <vector>

#include "core/projection.h"

namespace unidesk::projections {

/// A fresh instance of every projector (owned by the caller: no globals).
std::vector<std::unique_ptr<core::Projector>> AllProjectors();

}  // namespace unidesk::projections
