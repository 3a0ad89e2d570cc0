// Cron schedules of pipeline triggers (flow/cron.h): fields, ranges, steps, lists, the day-of-month
// / day-of-week rule, and errors that name the field.
#include "flow/cron.h"

#include <gtest/gtest.h>

namespace dlsys::flow {
namespace {

// 2026-12-04 (a Friday) at hh:mm UTC, in seconds since the epoch.
int64_t at(int day, int hh, int mm) {
  return 1796342400 + (day - 4) * 86400 + hh * 3600 + mm * 60;
}

TEST(Cron, FieldsRangesStepsAndLists) {
  auto c = parse_cron("*/15 3-5 * * *", "t");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(c->matches(at(4, 3, 0)));
  EXPECT_TRUE(c->matches(at(4, 5, 45)));
  EXPECT_FALSE(c->matches(at(4, 5, 46)));
  EXPECT_FALSE(c->matches(at(4, 6, 0)));
  EXPECT_TRUE(c->matches(at(4, 3, 0) + 59)) << "any second of the minute";
  auto l = parse_cron("5,10-20/5 0 * * *", "t");
  ASSERT_TRUE(l.ok());
  for (int m : {5, 10, 15, 20}) EXPECT_TRUE(l->matches(at(4, 0, m))) << m;
  for (int m : {6, 11, 25}) EXPECT_FALSE(l->matches(at(4, 0, m))) << m;
  auto from = parse_cron("50/5 * * * *", "t");
  ASSERT_TRUE(from.ok());
  EXPECT_TRUE(from->matches(at(4, 1, 55)));
  EXPECT_FALSE(from->matches(at(4, 1, 5)));
}

TEST(Cron, DaysOfMonthAndOfWeek) {
  // 2026-12-04 is a Friday (5), 12-06 a Sunday (0 and 7).
  auto fri = parse_cron("0 0 * * 5", "t");
  ASSERT_TRUE(fri.ok());
  EXPECT_TRUE(fri->matches(at(4, 0, 0)));
  EXPECT_FALSE(fri->matches(at(5, 0, 0)));
  auto sun = parse_cron("0 0 * * 7", "t");
  ASSERT_TRUE(sun.ok());
  EXPECT_TRUE(sun->matches(at(6, 0, 0)));
  // Both day fields restricted: either matches (the 1st of a month, or a Friday).
  auto either = parse_cron("0 0 1 * 5", "t");
  ASSERT_TRUE(either.ok());
  EXPECT_TRUE(either->matches(at(4, 0, 0)));
  EXPECT_FALSE(either->matches(at(5, 0, 0)));
  auto dec = parse_cron("0 0 * 11 *", "t");
  ASSERT_TRUE(dec.ok());
  EXPECT_FALSE(dec->matches(at(4, 0, 0))) << "December is not month 11";
}

TEST(Cron, MistakesNameTheField) {
  struct Case {
    const char* text;
    const char* expect;
  };
  for (const Case& c : std::vector<Case>{
           {"* * * *", "has 5 fields"},
           {"60 * * * *", "(minute): '60' is outside 0-59"},
           {"* 5-3 * * *", "(hour): '5-3' is outside 0-23"},
           {"* * 0 * *", "(day of month): '0' is outside 1-31"},
           {"*/0 * * * *", "a step of 0"},
           {"* * * jan *", "(month): 'jan' is not a number"},
           {"1, * * * *", "(minute): '1,' names no value"},
       }) {
    auto r = parse_cron(c.text, "p.yaml:7: triggers[0].cron");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos)
        << c.text << ": " << r.status().message();
    EXPECT_NE(r.status().message().find("p.yaml:7: triggers[0].cron"), std::string::npos);
  }
}

}  // namespace
}  // namespace dlsys::flow
