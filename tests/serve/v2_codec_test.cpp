// The KServe v2 codec alone: every refusal names the place, binary and JSON data agree, and
// responses carry what was asked for in the form asked for.
#include "serve/v2_codec.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstring>

namespace dlsys::serve {
namespace {

using nlohmann::json;

const std::vector<TensorSpec> kIn = {{"x", DType::kF32, {-1, 2}}, {"mask", DType::kBool, {-1}}};
const std::vector<TensorSpec> kOut = {{"y", DType::kF32, {-1, 2}}, {"ids", DType::kI64, {-1}}};

// An initializer list, not a json: a one-element braced json is a copy of the element under
// clang and an array under GCC.
json Body(std::initializer_list<json> inputs) {
  json list = json::array();
  for (const auto& i : inputs) list.push_back(i);
  return {{"inputs", list}};
}
json X(json shape, json data) {
  return {{"name", "x"}, {"datatype", "FP32"}, {"shape", shape}, {"data", data}};
}
json Mask(json shape, json data) {
  return {{"name", "mask"}, {"datatype", "BOOL"}, {"shape", shape}, {"data", data}};
}

std::string Error(const json& body, std::optional<size_t> jl = std::nullopt,
                  const std::string& tail = "") {
  auto r = parse_v2_infer_request(body.dump() + tail, jl, kIn, kOut);
  EXPECT_FALSE(r.ok()) << body.dump();
  return r.ok() ? "" : r.status().message();
}

TEST(V2Codec, ParsesJsonInputsInModelOrder) {
  auto r =
      parse_v2_infer_request(Body({Mask({2}, {true, false}), X({2, 2}, {{1, 2}, {3, 4}})}).dump(),
                             std::nullopt, kIn, kOut);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->inputs.size(), 2u);
  EXPECT_EQ(r->inputs[0].name, "x");  // the model's order, not the request's
  EXPECT_EQ(r->batch_rows, 2);
  EXPECT_EQ(r->inputs[0].tensor.data_as<float>()[3], 4.0f);
  EXPECT_EQ(r->inputs[1].tensor.data_as<uint8_t>()[0], 1);
}

TEST(V2Codec, RefusalsNameTheProblem) {
  auto has = [](const std::string& msg, const std::string& needle) {
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  };
  has(Error(Body({X({2, 2}, {1, 2, 3, 4})})), "input 'mask' is missing");
  has(Error(Body({X({2, 2}, {1, 2, 3, 4}), X({2, 2}, {1, 2, 3, 4}), Mask({2}, {true, true})})),
      "input 'x' is given twice");
  has(Error(Body({X({2, 2}, {1, 2, 3, 4}), Mask({3}, {true, true, false})})),
      "its first (batch) dimension is 3, but earlier inputs have 2");
  has(Error(Body({X({2, 2}, {1, 2, 3, 4, 5}), Mask({2}, {true, true})})),
      "holds more than the 4 elements");
  has(Error(Body({X({2, 2}, {1, 2, 3, 4}), Mask({2}, {1, 0})})), "expected true or false");
  has(Error(Body({X({2, 2}, {1, 2, 3, 1e300}), Mask({2}, {true, true})})), "FP32's range");
  has(Error(Body({X({-2, 2}, {1, 2}), Mask({2}, {true, true})})), "non-negative integers");
  has(Error(Body({X({0, 2}, json::array()), Mask({0}, json::array())})),
      "batch dimension of at least 1");
  has(Error(Body({X({int64_t{1} << 30, 2}, {1}), Mask({1}, {true})})), "holds more than 268435456");
  json bad_type = X({2, 2}, {1, 2, 3, 4});
  bad_type["datatype"] = "FLOAT";
  has(Error(Body({bad_type, Mask({2}, {true, true})})), "'FLOAT' is not a protocol datatype");
  json ok = Body({X({2, 2}, {1, 2, 3, 4}), Mask({2}, {true, true})});
  ok["outputs"] = {{{"name", "nope"}}};
  has(Error(ok), "output 'nope' is not an output of the model");
  ok["outputs"] = {{{"name", "y"}}, {{"name", "y"}}};
  has(Error(ok), "output 'y' is asked for twice");
  ok.erase("outputs");
  ok["parameters"] = {{"timeout", -5}};
  has(Error(ok), "parameter \"timeout\" must be a non-negative integer");
  has(Error(json::array()), "must be a JSON object");
}

TEST(V2Codec, BinaryInputsAreCountedExactly) {
  float x[4] = {1, 2, 3, 4};
  uint8_t mask[2] = {1, 0};
  std::string bin(reinterpret_cast<const char*>(x), 16);
  bin.append(reinterpret_cast<const char*>(mask), 2);
  json head = Body({{{"name", "x"},
                     {"datatype", "FP32"},
                     {"shape", {2, 2}},
                     {"parameters", {{"binary_data_size", 16}}}},
                    {{"name", "mask"},
                     {"datatype", "BOOL"},
                     {"shape", {2}},
                     {"parameters", {{"binary_data_size", 2}}}}});
  std::string h = head.dump();
  auto r = parse_v2_infer_request(h + bin, h.size(), kIn, kOut);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->inputs[0].tensor.data_as<float>()[2], 3.0f);
  EXPECT_EQ(r->inputs[1].tensor.data_as<uint8_t>()[1], 0);

  EXPECT_NE(Error(head, h.size(), bin + "x").find("19 bytes after the JSON header"),
            std::string::npos);  // trailing byte: 19 follow, 18 taken
  EXPECT_NE(Error(head, h.size(), bin.substr(0, 17)).find("go past the end of the body"),
            std::string::npos);
  std::string bad_bool = bin;
  bad_bool[17] = 7;
  EXPECT_NE(Error(head, h.size(), bad_bool).find("BOOL element 1 is byte 7"), std::string::npos);
  json wrong = head;
  wrong["inputs"][0]["parameters"]["binary_data_size"] = 12;
  EXPECT_NE(Error(wrong, wrong.dump().size(), bin).find("binary_data_size is 12 bytes"),
            std::string::npos);

  EXPECT_FALSE(parse_inference_header_length("12x", 100).ok());
  EXPECT_FALSE(parse_inference_header_length("101", 100).ok());
  EXPECT_EQ(*parse_inference_header_length("100", 100), std::optional<size_t>(100));
  EXPECT_EQ(*parse_inference_header_length("", 100), std::nullopt);
}

TEST(V2Codec, ResponsesCarryTheOutputsAskedForInTheFormAskedFor) {
  float y[4] = {0.5f, -1, 2, 3};
  int64_t ids[2] = {7, -9};
  std::vector<Tensor> outs = {Tensor::from_f32({2, 2}, y), Tensor::from_i64({2}, ids)};
  V2InferRequest req;
  req.id = "abc";
  auto all = encode_v2_infer_response("m", "3", req, kOut, outs);
  EXPECT_FALSE(all.json_length.has_value());
  json a = json::parse(all.body);
  EXPECT_EQ(a["id"], "abc");
  EXPECT_EQ(a["model_version"], "3");
  EXPECT_EQ(a["outputs"][0]["data"], json({0.5, -1.0, 2.0, 3.0}));
  EXPECT_EQ(a["outputs"][1]["datatype"], "INT64");
  EXPECT_EQ(a["outputs"][1]["data"], json({7, -9}));

  req.outputs = {{"ids", true}};
  auto one = encode_v2_infer_response("m", "3", req, kOut, outs);
  ASSERT_TRUE(one.json_length.has_value());
  json h = json::parse(one.body.substr(0, *one.json_length));
  ASSERT_EQ(h["outputs"].size(), 1u);
  EXPECT_EQ(h["outputs"][0]["name"], "ids");
  EXPECT_EQ(h["outputs"][0]["parameters"]["binary_data_size"], 16);
  int64_t back[2];
  ASSERT_EQ(one.body.size(), *one.json_length + 16);
  std::memcpy(back, one.body.data() + *one.json_length, 16);
  EXPECT_EQ(back[1], -9);
}

}  // namespace
}  // namespace dlsys::serve
