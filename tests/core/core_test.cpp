// core: checked JSON reads and DLSYS_CHECK.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/crc32c.h"
#include "core/json_get.h"
#include "core/json_parse.h"
#include "core/natural_order.h"
#include "core/status.h"

namespace dlsys {
namespace {

using nlohmann::json;

TEST(Crc32c, KnownValuesAndContinuation) {
  // The check value of the CRC-32C catalogue entry, and RFC 3720's 32 zero bytes.
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(crc32c("", 0), 0u);
  // Continuing over a split gives the whole buffer's value.
  EXPECT_EQ(crc32c("6789", 4, crc32c("12345", 5)), 0xE3069283u);
}

TEST(JsonGet, ReadsEachTypeAndNamesTheProblem) {
  json j = {{"id", 7}, {"name", "r"}, {"acc", 0.5}, {"ok", true}, {"big", 18446744073709551615ull}};
  EXPECT_EQ(*json_get<int64_t>(j, "id", "answer"), 7);
  EXPECT_EQ(*json_get<std::string>(j, "name", "answer"), "r");
  EXPECT_DOUBLE_EQ(*json_get<double>(j, "acc", "answer"), 0.5);
  EXPECT_DOUBLE_EQ(*json_get<double>(j, "id", "answer"), 7.0);
  EXPECT_TRUE(*json_get<bool>(j, "ok", "answer"));

  auto missing = json_get<int64_t>(j, "run_id", "the server's answer");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "the server's answer: 'run_id' is missing");
  auto wrong = json_get<int64_t>(j, "name", "the server's answer");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().message(),
            "the server's answer: 'name' must be an integer, got a string");
  EXPECT_FALSE(json_get<int64_t>(j, "acc", "a").ok()) << "a fraction is not an integer";
  EXPECT_FALSE(json_get<int64_t>(j, "big", "a").ok()) << "2^64-1 does not fit int64";
  auto not_object = json_get<int64_t>(json::array({1}), "id", "the body");
  ASSERT_FALSE(not_object.ok());
  EXPECT_EQ(not_object.status().message(), "the body: expected an object, got an array");
}

TEST(JsonGet, OptionalAndFallback) {
  json j = {{"a", nullptr}, {"b", "x"}};
  EXPECT_FALSE(json_get_optional<std::string>(j, "a", "d")->has_value());
  EXPECT_FALSE(json_get_optional<std::string>(j, "zz", "d")->has_value());
  EXPECT_EQ(**json_get_optional<std::string>(j, "b", "d"), "x");
  EXPECT_FALSE(json_get_optional<int64_t>(j, "b", "d").ok()) << "a wrong type still fails";
  EXPECT_EQ(*json_get_or<int64_t>(j, "zz", 5, "d"), 5);
}

// A number beyond a double is a 400-style error like any malformed JSON, not an exception
// (nlohmann throws out_of_range, not parse_error, for it; fuzz_v2_infer found "31e333").
TEST(JsonParse, NumbersBeyondADoubleAreAnError) {
  for (const char* text : {"[31e333]", "{\"x\": -1e400}", "[1, 2"}) {
    auto r = parse_json(text, JsonLimits{}, "the request body");
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << text;
    EXPECT_NE(r.status().message().find("the request body is not valid JSON"), std::string::npos)
        << r.status().message();
  }
  EXPECT_TRUE(parse_json("[1e308]", JsonLimits{}, "x").ok());
}

TEST(CheckDeathTest, StaysOnInReleaseBuildsWithItsHint) {
  int three = 3;
  EXPECT_DEATH(
      DLSYS_CHECK(three == 4, "three is {}: the likely mistake", three),
      "check failed at .*core_test.cpp:[0-9]+: three == 4 \\(three is 3: the likely mistake\\)");
}

TEST(CheckDeathTest, ResultValueOfAnErrorStopsWithTheError) {
  Result<int> r = Status::NotFound("run 9 does not exist");
  EXPECT_DEATH((void)r.value(),
               "Result::value\\(\\) called on an error \\(not found: run 9 does not exist\\)");
}

}  // namespace
TEST(NaturalOrder, NumbersInNamesCompareByValue) {
  std::vector<std::string> v = {"c10",  "c2",    "c1",     "c01", "b", "c",
                                "c100", "a10b2", "a10b10", "a9",  "",  "c0"};
  std::sort(v.begin(), v.end(),
            [](const std::string& a, const std::string& b) { return natural_less(a, b); });
  EXPECT_EQ(v, (std::vector<std::string>{"", "a9", "a10b2", "a10b10", "b", "c", "c0", "c1", "c01",
                                         "c2", "c10", "c100"}));
  EXPECT_FALSE(natural_less("c2", "c2"));
  EXPECT_TRUE(natural_less("x", "xa"));
  EXPECT_FALSE(natural_less("xa", "x"));
}

}  // namespace dlsys
