// safetensors round trips and malformed files (truncated, bad offsets, wrong sizes, bad JSON).
#include <gtest/gtest.h>

#include <cstring>

#include "tensor/safetensors.h"

namespace dlsys {
namespace {

std::string with_header(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

TEST(Safetensors, RoundTripsTensorsAndMetadata) {
  float w[6] = {1, 2, 3, 4, 5, 6};
  int64_t s[2] = {7, -8};
  SafetensorsFile f;
  f.tensors["layer.weight"] = Tensor::from_f32({2, 3}, w);
  f.tensors["steps"] = Tensor::from_i64({2}, s);
  f.metadata["format"] = "test";
  std::string bytes = safetensors_serialize(f);
  auto g = safetensors_parse(bytes, "mem");
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_EQ(g->metadata["format"], "test");
  EXPECT_EQ(g->tensors["layer.weight"].shape(), (Shape{2, 3}));
  EXPECT_EQ(std::memcmp(g->tensors["layer.weight"].data(), w, sizeof w), 0);
  EXPECT_EQ(g->tensors["steps"].data_as<int64_t>()[1], -8);
  // The layout other readers expect: header length, then JSON, then data.
  EXPECT_EQ(bytes[8], '{');
}

TEST(Safetensors, ReadsWideDtypesByTheirFormatNames) {
  // A file as the safetensors library writes it: {"d": F64 [1] = 1.5, "u": U16 [2] = 1, 65535}.
  std::string data = std::string("\0\0\0\0\0\0\xf8\x3f", 8) + std::string("\x01\0\xff\xff", 4);
  auto r =
      safetensors_parse(with_header(R"({"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},)"
                                    R"("u":{"dtype":"U16","shape":[2],"data_offsets":[8,12]}})",
                                    data),
                        "wide.safetensors");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->tensors["d"].dtype(), DType::kF64);
  EXPECT_EQ(r->tensors["d"].data_as<double>()[0], 1.5);
  ASSERT_EQ(r->tensors["u"].dtype(), DType::kU16);
  EXPECT_EQ(r->tensors["u"].data_as<uint16_t>()[1], 65535);
  // And writes them back under the same names.
  SafetensorsFile f;
  for (DType t : {DType::kF64, DType::kI16, DType::kU16, DType::kU32, DType::kU64})
    f.tensors[dtype_name(t)] = Tensor::zeros(t, {1});
  std::string bytes = safetensors_serialize(f);
  for (const char* name : {"\"F64\"", "\"I16\"", "\"U16\"", "\"U32\"", "\"U64\""})
    EXPECT_NE(bytes.find(name), std::string::npos) << name;
  auto back = safetensors_parse(bytes, "mem");
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->tensors["u64"].dtype(), DType::kU64);
}

TEST(Safetensors, MalformedFilesNameTheProblem) {
  auto err = [](const std::string& bytes) {
    auto r = safetensors_parse(bytes, "bad.safetensors");
    EXPECT_FALSE(r.ok());
    return r.status().message();
  };
  EXPECT_NE(err("abc").find("too short"), std::string::npos);
  EXPECT_NE(err(std::string("\xff\xff\xff\xff\0\0\0\0{}", 10)).find("truncated"),
            std::string::npos);
  EXPECT_NE(err(with_header("[1,2]", "")).find("not a JSON object"), std::string::npos);
  EXPECT_NE(err(with_header(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})",
                            std::string(8, '\0')))
                .find("fall outside"),
            std::string::npos);
  EXPECT_NE(err(with_header(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                            std::string(8, '\0')))
                .find("needs 12"),
            std::string::npos);
  EXPECT_NE(err(with_header(R"({"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})",
                            std::string(8, '\0')))
                .find("'C64'"),
            std::string::npos);
  EXPECT_NE(err(with_header(R"({"w":{"dtype":"F32","shape":[1]}})", "")).find("data_offsets"),
            std::string::npos);
}

}  // namespace
}  // namespace dlsys
