#include "serve/batch_tensors.h"

#include <gtest/gtest.h>

#include <numeric>

namespace dlsys::serve {
namespace {

Tensor f32(const Shape& s, float start) {
  Tensor t = Tensor::empty(DType::kF32, s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = start + static_cast<float>(i);
  return t;
}

Tensor i64(const Shape& s, int64_t start) {
  Tensor t = Tensor::empty(DType::kI64, s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<int64_t>()[i] = start + i;
  return t;
}

void expect_same(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.dtype(), b.dtype());
  ASSERT_EQ(a.shape(), b.shape());
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_EQ(a.get_f64(i), b.get_f64(i)) << i;
}

TEST(BatchTensors, ConcatPadSplitRoundTripF32I64And3D) {
  // Three requests of 1, 3 and 2 rows; inputs: f32 [r, 2], i64 [r], f32 [r, 2, 3].
  std::vector<std::vector<Tensor>> reqs;
  const std::vector<int64_t> rows = {1, 3, 2};
  for (size_t r = 0; r < rows.size(); ++r) {
    reqs.push_back(
        {f32({rows[r], 2}, 100.f * r), i64({rows[r]}, 1000 * r), f32({rows[r], 2, 3}, -50.f * r)});
  }
  std::vector<const std::vector<Tensor>*> parts;
  for (auto& r : reqs) parts.push_back(&r);
  auto cat = concat_rows(parts, 8);
  ASSERT_TRUE(cat.ok()) << cat.status().to_string();
  ASSERT_EQ(cat->size(), 3u);
  EXPECT_EQ((*cat)[0].shape(), (Shape{8, 2}));
  EXPECT_EQ((*cat)[1].shape(), (Shape{8}));
  EXPECT_EQ((*cat)[2].shape(), (Shape{8, 2, 3}));
  // Row 1 of the batch is row 0 of request 1; rows 6 and 7 are zero padding.
  EXPECT_EQ((*cat)[0].data_as<float>()[2], 100.f);
  EXPECT_EQ((*cat)[1].data_as<int64_t>()[1], 1000);
  for (int64_t i = 12; i < 16; ++i) EXPECT_EQ((*cat)[0].data_as<float>()[i], 0.f);
  for (int64_t i = 6; i < 8; ++i) EXPECT_EQ((*cat)[1].data_as<int64_t>()[i], 0);
  for (int64_t i = 36; i < 48; ++i) EXPECT_EQ((*cat)[2].data_as<float>()[i], 0.f);

  auto split = split_rows(*cat, rows);
  ASSERT_TRUE(split.ok()) << split.status().to_string();
  ASSERT_EQ(split->size(), 3u);
  for (size_t r = 0; r < rows.size(); ++r) {
    ASSERT_EQ((*split)[r].size(), 3u);
    for (size_t i = 0; i < 3; ++i) expect_same((*split)[r][i], reqs[r][i]);
  }
  // Owned copies: overwriting the batch leaves the split results alone.
  std::fill_n((*cat)[0].data_as<float>(), 16, 7.f);
  expect_same((*split)[1][0], reqs[1][0]);
}

TEST(BatchTensors, ConcatWithoutPadding) {
  std::vector<Tensor> a = {f32({2, 2}, 0)}, b = {f32({1, 2}, 10)};
  auto cat = concat_rows({&a, &b}, 3);
  ASSERT_TRUE(cat.ok());
  const float want[] = {0, 1, 2, 3, 10, 11};
  for (int i = 0; i < 6; ++i) EXPECT_EQ((*cat)[0].data_as<float>()[i], want[i]);
}

TEST(BatchTensors, ConcatErrorsNameTheInputAndTheDifference) {
  std::vector<Tensor> a = {f32({1, 2}, 0), i64({1}, 0)};
  std::vector<Tensor> wrong_dtype = {f32({1, 2}, 0), f32({1}, 0)};
  std::vector<Tensor> wrong_dims = {f32({1, 3}, 0), i64({1}, 0)};
  std::vector<Tensor> too_few = {f32({1, 2}, 0)};
  std::vector<Tensor> scalar = {Tensor::zeros(DType::kF32, {}), i64({1}, 0)};

  auto st = concat_rows({&a, &wrong_dtype}, 2).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("input 1 of part 1 has dtype f32, part 0 has i64"), std::string::npos)
      << st.message();
  st = concat_rows({&a, &wrong_dims}, 2).status();
  EXPECT_NE(st.message().find("input 0 of part 1 has shape [1, 3], part 0 has [1, 2]"),
            std::string::npos)
      << st.message();
  st = concat_rows({&a, &too_few}, 2).status();
  EXPECT_NE(st.message().find("part 1 has 1 inputs, part 0 has 2"), std::string::npos)
      << st.message();
  st = concat_rows({&scalar}, 2).status();
  EXPECT_NE(st.message().find("input 0 of part 0 is a scalar"), std::string::npos) << st.message();
  st = concat_rows({&a, &a}, 1).status();
  EXPECT_NE(st.message().find("padded_rows 1 is less than the 2 rows of input 0"),
            std::string::npos)
      << st.message();
  EXPECT_FALSE(concat_rows({}, 1).ok());
  EXPECT_FALSE(concat_rows({nullptr}, 1).ok());
}

TEST(BatchTensors, SplitErrorsNameTheOutput) {
  std::vector<Tensor> outs = {f32({4, 2}, 0), Tensor::zeros(DType::kF32, {})};
  auto st = split_rows(outs, {1, 2}).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("output 1 is a scalar"), std::string::npos) << st.message();
  std::vector<Tensor> short_out = {f32({4, 2}, 0), f32({2}, 0)};
  st = split_rows(short_out, {1, 2}).status();
  EXPECT_NE(st.message().find("output 1 has shape [2]: its first dimension is not the batch of 3"),
            std::string::npos)
      << st.message();
  EXPECT_FALSE(split_rows({f32({4, 2}, 0)}, {-1}).ok());
}

TEST(BatchTensors, Buckets) {
  EXPECT_EQ(default_buckets(32), (std::vector<int64_t>{1, 2, 4, 8, 16, 32}));
  EXPECT_EQ(default_buckets(1), (std::vector<int64_t>{1}));
  EXPECT_EQ(default_buckets(6), (std::vector<int64_t>{1, 2, 4, 6}));
  EXPECT_TRUE(default_buckets(0).empty());
  const auto b = default_buckets(32);
  EXPECT_EQ(bucket_for(1, b), 1);
  EXPECT_EQ(bucket_for(3, b), 4);
  EXPECT_EQ(bucket_for(16, b), 16);
  EXPECT_EQ(bucket_for(17, b), 32);
  EXPECT_EQ(bucket_for(32, b), 32);
  EXPECT_EQ(bucket_for(33, b), -1);
}

}  // namespace
}  // namespace dlsys::serve
