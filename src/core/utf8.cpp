#include "core/utf8.h"

namespace dlsys {

bool is_valid_utf8(std::string_view s, size_t* bad_offset) {
  size_t i = 0;
  const size_t n = s.size();
  auto fail = [&](size_t at) {
    if (bad_offset) *bad_offset = at;
    return false;
  };
  auto cont = [&](size_t k) { return k < n && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80; };
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    // The second byte's range excludes overlongs (E0, F0), surrogates (ED) and > U+10FFFF (F4)
    // (RFC 3629, section 4).
    unsigned char lo = 0x80, hi = 0xBF;
    size_t len;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return fail(i);  // a continuation byte, C0/C1 (overlong) or F5..FF
    }
    if (i + 1 >= n) return fail(i);
    unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
    if (c1 < lo || c1 > hi) return fail(i);
    for (size_t k = 2; k < len; ++k)
      if (!cont(i + k)) return fail(i);
    i += len;
  }
  return true;
}

std::string printable_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    size_t bad = 0;
    if (is_valid_utf8(text, &bad)) {
      out.append(text);
      break;
    }
    out.append(text.substr(0, bad));
    out.append("\xEF\xBF\xBD");
    // Skip the bad byte; what follows is checked again.
    text.remove_prefix(bad + 1);
  }
  return out;
}

}  // namespace dlsys
