#include <gtest/gtest.h>

#include <filesystem>

#include "tensor/npy.h"

namespace dlsys {
namespace {

TEST(Npy, RoundTripsEveryDtype) {
  for (DType t :
       {DType::kF32, DType::kF16, DType::kI8, DType::kU8, DType::kI32, DType::kI64, DType::kBool}) {
    Tensor a = Tensor::empty(t, {2, 3});
    for (size_t i = 0; i < a.nbytes(); ++i)
      static_cast<uint8_t*>(a.data())[i] = static_cast<uint8_t>(i * 7 % 2);
    auto b = npy_parse(npy_serialize(a), "mem");
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    EXPECT_EQ(b->dtype(), t);
    EXPECT_EQ(b->shape(), (Shape{2, 3}));
    EXPECT_EQ(0, std::memcmp(a.data(), b->data(), a.nbytes()));
  }
}

TEST(Npy, ScalarAndEmptyShapes) {
  float v = 3.5f;
  auto s = npy_parse(npy_serialize(Tensor::from_f32({}, &v)), "mem");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->shape(), Shape{});
  EXPECT_EQ(s->data_as<float>()[0], 3.5f);
  auto e = npy_parse(npy_serialize(Tensor::empty(DType::kF32, {0, 4})), "mem");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->shape(), (Shape{0, 4}));
}

TEST(Npy, RejectsMalformedInputWithClearErrors) {
  float v[6] = {1, 2, 3, 4, 5, 6};
  std::string good = npy_serialize(Tensor::from_f32({2, 3}, v));
  auto truncated = npy_parse(good.substr(0, good.size() - 4), "x.npy");
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("truncated"), std::string::npos)
      << truncated.status().message();
  auto not_npy = npy_parse("hello world, this is text", "x.npy");
  ASSERT_FALSE(not_npy.ok());
  EXPECT_NE(not_npy.status().message().find("not a .npy"), std::string::npos);
  std::string f64 = good;
  f64.replace(f64.find("<f4"), 3, "<f8");
  auto bad_dtype = npy_parse(f64, "x.npy");
  ASSERT_FALSE(bad_dtype.ok());
  EXPECT_NE(bad_dtype.status().message().find("astype"), std::string::npos);
  std::string fortran = good;
  fortran.replace(fortran.find("False"), 5, "True ");
  EXPECT_FALSE(npy_parse(fortran, "x.npy").ok());
  std::string huge_header = good;
  huge_header[8] = '\xff';
  huge_header[9] = '\xff';
  EXPECT_FALSE(npy_parse(huge_header, "x.npy").ok());
  // Random bytes after the magic never crash.
  std::string noise = "\x93NUMPY\x01\x00";
  for (int i = 0; i < 200; ++i) noise.push_back(static_cast<char>((i * 131 + 7) & 0xff));
  EXPECT_FALSE(npy_parse(noise, "x.npy").ok());
}

TEST(Npy, WriteIsAtomicAndReadable) {
  auto dir = std::filesystem::temp_directory_path() / ("dlsys_npy_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  int64_t v[3] = {1, -2, 3};
  std::string path = (dir / "a.npy").string();
  ASSERT_TRUE(npy_write(path, Tensor::from_i64({3}, v)).ok());
  auto r = npy_read(path);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->data_as<int64_t>()[1], -2);
  for (auto& e : std::filesystem::directory_iterator(dir)) EXPECT_EQ(e.path().filename(), "a.npy");
  EXPECT_FALSE(npy_read((dir / "missing.npy").string()).ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dlsys
