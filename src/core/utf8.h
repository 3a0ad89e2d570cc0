// Strict UTF-8 validation (RFC 3629): names that reach the file system, the database or a log
// must be text that every reader decodes the same way.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dlsys {

// True when `s` is well-formed UTF-8: no overlong encodings, no UTF-16 surrogates
// (U+D800..U+DFFF), nothing above U+10FFFF, no truncated or stray continuation bytes. When it
// is not and `bad_offset` is given, sets it to the offset of the first byte of the bad sequence.
bool is_valid_utf8(std::string_view s, size_t* bad_offset = nullptr);

// `text` with every byte that is not part of well-formed UTF-8 replaced by U+FFFD (a log holds
// whatever a program printed; JSON carries text).
std::string printable_utf8(std::string_view text);

}  // namespace dlsys
