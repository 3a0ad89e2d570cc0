// A cron schedule (the five fields of crontab(5): minute hour day-of-month month day-of-week),
// for pipeline triggers. Each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a
// list of those (`1,15,30-40/5`); day-of-week 0-7 (0 and 7 are Sunday). As in cron, when both
// day fields are restricted a time matches either. Times are UTC.
//
// Threading: plain values.
#pragma once

#include <bitset>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace dlsys::flow {

struct CronSchedule {
  std::bitset<60> minutes;
  std::bitset<24> hours;
  std::bitset<32> days;     // 1..31
  std::bitset<13> months;   // 1..12
  std::bitset<7> weekdays;  // 0..6, Sunday 0
  bool any_day = true, any_weekday = true;
  // Whether the minute starting at `epoch_seconds` (UTC) is one of the schedule's.
  bool matches(int64_t epoch_seconds) const;
};

// Parses `text`; `where` names it in errors, which say which field is wrong and why.
Result<CronSchedule> parse_cron(const std::string& text, const std::string& where);

}  // namespace dlsys::flow
