#include <gtest/gtest.h>

#include <filesystem>

#include "tensor/npy.h"

namespace dlsys {
namespace {

TEST(Npy, RoundTripsEveryDtype) {
  for (DType t : {DType::kF32, DType::kF16, DType::kI8, DType::kU8, DType::kI32, DType::kI64,
                  DType::kBool, DType::kF64, DType::kI16, DType::kU16, DType::kU32, DType::kU64}) {
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

TEST(Npy, ReadsWideDtypesWrittenByNumPy) {
  // np.save of np.array([1.5, -2.0]) and np.array([2**64 - 1, 3], dtype=np.uint64): a version 1
  // header padded to a multiple of 64 bytes, then little-endian data.
  auto file = [](const std::string& descr, const std::string& data) {
    std::string h = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (2,), }";
    h.append((64 - (10 + h.size() + 1) % 64) % 64, ' ');
    h.push_back('\n');
    return std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(h.size()) + '\0' + h + data;
  };
  auto f =
      npy_parse(file("<f8", std::string("\0\0\0\0\0\0\xf8\x3f\0\0\0\0\0\0\0\xc0", 16)), "f.npy");
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  ASSERT_EQ(f->dtype(), DType::kF64);
  EXPECT_EQ(f->data_as<double>()[0], 1.5);
  EXPECT_EQ(f->data_as<double>()[1], -2.0);
  auto u = npy_parse(file("<u8", std::string(8, '\xff') + std::string("\x03\0\0\0\0\0\0\0", 8)),
                     "u.npy");
  ASSERT_TRUE(u.ok()) << u.status().to_string();
  ASSERT_EQ(u->dtype(), DType::kU64);
  EXPECT_EQ(u->data_as<uint64_t>()[0], 18446744073709551615ull);
  EXPECT_EQ(u->data_as<uint64_t>()[1], 3u);
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
  std::string c64 = good;
  c64.replace(c64.find("<f4"), 3, "<c8");  // complex64: not a dlsys dtype
  auto bad_dtype = npy_parse(c64, "x.npy");
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
