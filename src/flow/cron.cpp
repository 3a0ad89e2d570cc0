#include "flow/cron.h"

#include <fmt/format.h>

#include <ctime>
#include <sstream>
#include <vector>

namespace dlsys::flow {
namespace {

Result<int> number(const std::string& s, const std::string& what) {
  if (s.empty() || s.size() > 4 || s.find_first_not_of("0123456789") != std::string::npos)
    return Status::Invalid("{}: '{}' is not a number", what, s);
  return std::stoi(s);
}

// Sets the bits of `field` (values lo..hi) that `text` names.
template <size_t N>
Status parse_field(const std::string& text, int lo, int hi, const std::string& what,
                   std::bitset<N>* bits) {
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    int step = 1;
    std::string range = item;
    if (size_t slash = item.find('/'); slash != std::string::npos) {
      DLSYS_ASSIGN_OR_RETURN(step, number(item.substr(slash + 1), what));
      if (step < 1) return Status::Invalid("{}: a step of 0 in '{}'", what, item);
      range = item.substr(0, slash);
    }
    int a = lo, b = hi;
    if (range != "*") {
      const size_t dash = range.find('-');
      DLSYS_ASSIGN_OR_RETURN(a, number(range.substr(0, dash), what));
      b = a;
      if (dash != std::string::npos) {
        DLSYS_ASSIGN_OR_RETURN(b, number(range.substr(dash + 1), what));
      } else if (item.find('/') != std::string::npos) {
        b = hi;  // "5/15": from 5 on, every 15
      }
    }
    if (a < lo || b > hi || a > b)
      return Status::Invalid("{}: '{}' is outside {}-{}", what, item, lo, hi);
    for (int v = a; v <= b; v += step) bits->set(static_cast<size_t>(v));
  }
  if (text.empty() || text.back() == ',' || bits->none())
    return Status::Invalid("{}: '{}' names no value", what, text);
  return Status::OK();
}

}  // namespace

bool CronSchedule::matches(int64_t epoch_seconds) const {
  const std::time_t t = static_cast<std::time_t>(epoch_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  if (!minutes[static_cast<size_t>(tm.tm_min)] || !hours[static_cast<size_t>(tm.tm_hour)] ||
      !months[static_cast<size_t>(tm.tm_mon + 1)])
    return false;
  const bool day = days[static_cast<size_t>(tm.tm_mday)];
  const bool weekday = weekdays[static_cast<size_t>(tm.tm_wday)];
  if (any_day && any_weekday) return true;
  if (any_day) return weekday;
  if (any_weekday) return day;
  return day || weekday;
}

Result<CronSchedule> parse_cron(const std::string& text, const std::string& where) {
  std::stringstream in(text);
  std::vector<std::string> f;
  for (std::string s; in >> s;) f.push_back(s);
  if (f.size() != 5)
    return Status::Invalid(
        "{}: a cron schedule has 5 fields (minute hour day-of-month month day-of-week, e.g. "
        "\"0 3 * * *\" for 03:00 UTC every day), got {} in \"{}\"",
        where, f.size(), text.substr(0, 100));
  CronSchedule c;
  DLSYS_RETURN_IF_ERROR(parse_field(f[0], 0, 59, where + " (minute)", &c.minutes));
  DLSYS_RETURN_IF_ERROR(parse_field(f[1], 0, 23, where + " (hour)", &c.hours));
  DLSYS_RETURN_IF_ERROR(parse_field(f[2], 1, 31, where + " (day of month)", &c.days));
  DLSYS_RETURN_IF_ERROR(parse_field(f[3], 1, 12, where + " (month)", &c.months));
  std::bitset<8> wd;
  DLSYS_RETURN_IF_ERROR(parse_field(f[4], 0, 7, where + " (day of week)", &wd));
  for (size_t d = 0; d < 7; ++d) c.weekdays[d] = wd[d] || (d == 0 && wd[7]);
  c.any_day = f[2] == "*";
  c.any_weekday = f[4] == "*";
  return c;
}

}  // namespace dlsys::flow
