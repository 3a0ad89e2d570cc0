// Natural order for names that carry numbers: "c2" before "c10", "layer9.w" before "layer10.w".
// Runs of ASCII digits compare by value (then by length, so "c01" follows "c1"); everything else
// compares byte by byte. Used wherever columns or files are listed for people.
#pragma once

#include <string_view>

namespace dlsys {

// True when `a` sorts before `b` in natural order. A strict weak order (usable with std::sort).
bool natural_less(std::string_view a, std::string_view b);

}  // namespace dlsys
