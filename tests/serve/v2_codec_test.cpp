// The KServe v2 codec alone: every refusal names the place, binary and JSON data agree, and
// responses carry what was asked for in the form asked for.
#include "serve/v2_codec.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
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

TEST(V2Codec, WideDtypesInJsonAndBinary) {
  const std::vector<TensorSpec> in = {{"d", DType::kF64, {-1}},
                                      {"s", DType::kI16, {-1}},
                                      {"h", DType::kU16, {-1}},
                                      {"w", DType::kU32, {-1}},
                                      {"q", DType::kU64, {-1}}};
  auto input = [](const char* name, const char* type, json data) {
    return json{{"name", name}, {"datatype", type}, {"shape", {2}}, {"data", data}};
  };
  json body = {{"inputs",
                {input("d", "FP64", {0.1, -4503599627370497.0}), input("s", "INT16", {-32768, 7}),
                 input("h", "UINT16", {65535, 0}), input("w", "UINT32", {4294967295u, 1}),
                 input("q", "UINT64", {18446744073709551615ull, 2})}}};
  auto r = parse_v2_infer_request(body.dump(), std::nullopt, in, kOut);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->inputs[0].tensor.dtype(), DType::kF64);
  EXPECT_EQ(r->inputs[0].tensor.data_as<double>()[0], 0.1);  // not rounded through float
  EXPECT_EQ(r->inputs[0].tensor.data_as<double>()[1], -4503599627370497.0);
  EXPECT_EQ(r->inputs[1].tensor.data_as<int16_t>()[0], -32768);
  EXPECT_EQ(r->inputs[2].tensor.data_as<uint16_t>()[0], 65535);
  EXPECT_EQ(r->inputs[3].tensor.data_as<uint32_t>()[0], 4294967295u);
  EXPECT_EQ(r->inputs[4].tensor.data_as<uint64_t>()[0], 18446744073709551615ull);

  // Out of range for the type: named with the range.
  auto refusal = [&](size_t k, json data) {
    json b = body;
    b["inputs"][k]["data"] = data;
    auto e = parse_v2_infer_request(b.dump(), std::nullopt, in, kOut);
    EXPECT_FALSE(e.ok()) << b.dump();
    return e.ok() ? std::string() : e.status().message();
  };
  EXPECT_NE(refusal(1, {32768, 0}).find("an integer in -32768..32767"), std::string::npos);
  EXPECT_NE(refusal(2, {-1, 0}).find("an integer in 0..65535"), std::string::npos);
  EXPECT_NE(refusal(3, {4294967296, 0}).find("an integer in 0..4294967295"), std::string::npos);
  EXPECT_NE(refusal(4, {-1, 0}).find("0..18446744073709551615"), std::string::npos);

  // Binary FP64 input: 8 bytes per element.
  const std::vector<TensorSpec> din = {{"d", DType::kF64, {-1}}};
  double d[2] = {1.5, -0.25};
  json head = {{"inputs",
                {{{"name", "d"},
                  {"datatype", "FP64"},
                  {"shape", {2}},
                  {"parameters", {{"binary_data_size", 16}}}}}}};
  std::string h = head.dump();
  auto rb = parse_v2_infer_request(h + std::string(reinterpret_cast<const char*>(d), 16), h.size(),
                                   din, kOut);
  ASSERT_TRUE(rb.ok()) << rb.status().to_string();
  EXPECT_EQ(rb->inputs[0].tensor.data_as<double>()[1], -0.25);

  // Responses name the types and carry the exact values.
  const std::vector<TensorSpec> out = {{"q", DType::kU64, {-1}}, {"d", DType::kF64, {-1}}};
  std::vector<Tensor> outs = {r->inputs[4].tensor, r->inputs[0].tensor};
  auto resp = encode_v2_infer_response("m", "1", V2InferRequest{}, out, outs);
  json a = json::parse(resp.body);
  EXPECT_EQ(a["outputs"][0]["datatype"], "UINT64");
  EXPECT_EQ(a["outputs"][0]["data"][0].get<uint64_t>(), 18446744073709551615ull);
  EXPECT_EQ(a["outputs"][1]["datatype"], "FP64");
  EXPECT_EQ(a["outputs"][1]["data"][0].get<double>(), 0.1);
}

// The column form and derived outputs of a model trained by dlsys (serve/v2_extras.h): a
// classifier with features a (numeric), color (categorical) and b (numeric) in one input f32
// [-1, 3], and logits y [-1, 3].
const std::vector<TensorSpec> kRowIn = {{"x", DType::kF32, {-1, 3}}};
const std::vector<TensorSpec> kRowOut = {{"y", DType::kF32, {-1, 3}}};

V2ModelExtras Extras() {
  ModelMetadata m;
  m.task = "classification";
  m.feature_names = {"a", "color", "b"};
  m.class_names = {"cat", "dog", "eel"};
  m.vocabularies["color"] = {{"red", 0.0f}, {"green", 1.0f}, {"blue", 2.0f}};
  return v2_model_extras(m, kRowIn, kRowOut);
}

json Col(const std::string& name, const std::string& type, json shape, json data) {
  return {{"name", name}, {"datatype", type}, {"shape", shape}, {"data", data}};
}

// A BYTES binary element: 4-byte little-endian length, then the bytes.
std::string BytesElement(const std::string& s) {
  uint32_t n = static_cast<uint32_t>(s.size());
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + s;
}

Result<V2InferRequest> ParseColumns(const json& body, std::optional<size_t> jl = std::nullopt,
                                    const std::string& tail = "") {
  V2ModelExtras x = Extras();
  return parse_v2_infer_request(body.dump() + tail, jl, kRowIn, kRowOut, {}, &x);
}

std::string ColumnError(const json& body, std::optional<size_t> jl = std::nullopt,
                        const std::string& tail = "") {
  auto r = ParseColumns(body, jl, tail);
  EXPECT_FALSE(r.ok()) << body.dump();
  return r.ok() ? "" : r.status().message();
}

TEST(V2Codec, WhatAModelsMetadataOffers) {
  V2ModelExtras x = Extras();
  ASSERT_EQ(x.features.size(), 3u);
  EXPECT_FALSE(x.features[0].categorical);
  EXPECT_TRUE(x.features[1].categorical);
  ASSERT_EQ(x.derived.size(), 3u);
  EXPECT_EQ(x.derived[0].name, "probabilities");
  EXPECT_EQ(x.derived[0].shape, std::vector<int64_t>({-1, 3}));
  EXPECT_STREQ(x.derived[1].datatype, "BYTES");
  EXPECT_STREQ(x.derived[2].datatype, "INT64");

  ModelMetadata m = x.metadata;
  // Names that do not fill the input: no columns. Regression: no derived outputs.
  m.feature_names = {"a", "b"};
  m.task = "regression";
  V2ModelExtras none = v2_model_extras(m, kRowIn, kRowOut);
  EXPECT_TRUE(none.features.empty());
  EXPECT_TRUE(none.derived.empty());
  // A model output named like a derived one keeps its name; binary classification gives [N, 2].
  m.task = "binary_classification";
  V2ModelExtras bin =
      v2_model_extras(m, kRowIn, {{"y", DType::kF32, {-1, 1}}, {"class", DType::kI64, {-1}}});
  ASSERT_EQ(bin.derived.size(), 2u);
  EXPECT_EQ(bin.derived[0].shape, std::vector<int64_t>({-1, 2}));
  EXPECT_EQ(bin.derived[1].name, "class_id");
  // No metadata (a model not trained by dlsys): nothing.
  V2ModelExtras plain = v2_model_extras(ModelMetadata{}, kRowIn, kRowOut);
  EXPECT_TRUE(plain.features.empty());
  EXPECT_TRUE(plain.derived.empty());
}

TEST(V2Codec, ColumnsAreAssembledInFeatureOrderWithCategoriesCoded) {
  json body = Body({Col("b", "INT64", {3}, {7, 8, 9}),
                    Col("color", "BYTES", {3, 1}, {{"blue"}, {"purple"}, nullptr}),
                    Col("a", "FP64", {3}, {0.5, nullptr, -2})});
  auto r = ParseColumns(body);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->columns);
  EXPECT_EQ(r->batch_rows, 3);
  ASSERT_EQ(r->inputs.size(), 1u);
  EXPECT_EQ(r->inputs[0].name, "x");
  const Tensor& t = r->inputs[0].tensor;
  ASSERT_EQ(t.shape(), Shape({3, 3}));
  const float* p = t.data_as<float>();
  EXPECT_EQ(p[0], 0.5f);          // a
  EXPECT_EQ(p[1], 2.0f);          // blue
  EXPECT_EQ(p[2], 7.0f);          // b
  EXPECT_TRUE(std::isnan(p[3]));  // null a: missing
  EXPECT_EQ(p[4], -1.0f);         // an unknown category: as an unseen one
  EXPECT_TRUE(std::isnan(p[7]));  // null category: missing
  EXPECT_EQ(p[8], 9.0f);

  // The tensor form still works beside it.
  auto plain = ParseColumns(
      Body({{{"name", "x"}, {"datatype", "FP32"}, {"shape", {1, 3}}, {"data", {1, 2, 3}}}}));
  ASSERT_TRUE(plain.ok()) << plain.status().to_string();
  EXPECT_FALSE(plain->columns);
}

TEST(V2Codec, BinaryColumnsIncludingBytes) {
  double a[2] = {1.5, -3};
  int32_t b[2] = {4, 5};
  std::string colors = BytesElement("green") + BytesElement("");
  std::string bin = std::string(reinterpret_cast<const char*>(a), 16) + colors +
                    std::string(reinterpret_cast<const char*>(b), 8);
  json head = Body({{{"name", "a"},
                     {"datatype", "FP64"},
                     {"shape", {2}},
                     {"parameters", {{"binary_data_size", 16}}}},
                    {{"name", "color"},
                     {"datatype", "BYTES"},
                     {"shape", {2}},
                     {"parameters", {{"binary_data_size", colors.size()}}}},
                    {{"name", "b"},
                     {"datatype", "INT32"},
                     {"shape", {2, 1}},
                     {"parameters", {{"binary_data_size", 8}}}}});
  std::string h = head.dump();
  auto r = ParseColumns(head, h.size(), bin);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const float* p = r->inputs[0].tensor.data_as<float>();
  EXPECT_EQ(std::vector<float>(p, p + 6), std::vector<float>({1.5f, 1, 4, -3, -1, 5}));

  // A length that runs past the input's bytes names the element and its byte offset.
  std::string bad = colors;
  bad[9] = 50;  // element 1 (at byte offset 9) claims 50 bytes
  EXPECT_NE(ColumnError(head, h.size(), std::string(bin).replace(16, colors.size(), bad))
                .find("column 'color': BYTES element 1 at byte offset 9 is 50 bytes long, but 0 "
                      "of its 13 bytes remain"),
            std::string::npos);
  // Too few bytes for a length.
  json shorter = head;
  shorter["inputs"][1]["parameters"]["binary_data_size"] = 11;
  std::string hs = shorter.dump();
  EXPECT_NE(ColumnError(shorter, hs.size(),
                        bin.substr(0, 16) + colors.substr(0, 11) + bin.substr(16 + 13))
                .find("column 'color': BYTES element 1 at byte offset 9 needs a 4-byte length, "
                      "but 2 of its 11 bytes remain"),
            std::string::npos);
  // Fewer bytes than the elements' lengths alone take: refused before anything is read.
  json tiny = head;
  tiny["inputs"][1]["parameters"]["binary_data_size"] = 4;
  std::string ht = tiny.dump();
  EXPECT_NE(
      ColumnError(tiny, ht.size(), bin.substr(0, 16) + colors.substr(0, 4) + bin.substr(16 + 13))
          .find("column 'color': binary_data_size is 4 bytes, too few for 2 BYTES elements"),
      std::string::npos);
  // Bytes left over after the last element.
  json longer = head;
  longer["inputs"][1]["parameters"]["binary_data_size"] = 14;
  std::string hl = longer.dump();
  EXPECT_NE(ColumnError(longer, hl.size(), bin.substr(0, 16) + colors + "z" + bin.substr(16 + 13))
                .find("binary_data_size is 14 bytes, but its 2 BYTES elements end at byte "
                      "offset 13"),
            std::string::npos);
  // A numeric column's byte count must match its shape.
  json wrong = head;
  wrong["inputs"][0]["parameters"]["binary_data_size"] = 8;
  std::string hw = wrong.dump();
  EXPECT_NE(ColumnError(wrong, hw.size(), bin.substr(8)).find("column 'a': binary_data_size is 8"),
            std::string::npos);
}

TEST(V2Codec, ColumnRefusalsNameTheColumn) {
  auto has = [](const std::string& msg, const std::string& needle) {
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  };
  json a = Col("a", "FP32", {2}, {1, 2});
  json color = Col("color", "BYTES", {2}, {"red", "blue"});
  json b = Col("b", "FP32", {2}, {3, 4});
  has(ColumnError(Body({a, color})),
      "feature 'b' is missing (the model's features: 'a', 'color', 'b')");
  has(ColumnError(Body({a, color, b, Col("zz", "FP32", {2}, {1, 2})})),
      "input 'zz' is not a feature of the model (its features: 'a', 'color', 'b'; or send its "
      "input 'x' as one tensor)");
  has(ColumnError(Body({Col("a", "BYTES", {2}, {"1", "2"}), color, b})),
      "column 'a': feature 'a' is numeric; send FP32, FP64, INT32 or INT64, not BYTES");
  has(ColumnError(Body({Col("a", "FP32", {2}, {1, "2"}), color, b})),
      "column 'a': element 1 is a string, expected a number or null for feature 'a'");
  has(ColumnError(Body({a, Col("color", "INT64", {2}, {0, 1}), b})),
      "column 'color': feature 'color' takes category names; send them as datatype BYTES");
  has(ColumnError(Body({a, Col("color", "BYTES", {2}, {"red", 3}), b})),
      "column 'color': element 1 is 3, expected a category name");
  has(ColumnError(Body({a, color, Col("b", "FP32", {3}, {3, 4, 5})})),
      "column 'b': 3 rows, but column 'a' has 2; every column carries the same rows");
  has(ColumnError(Body({a, color, Col("b", "FP32", {2, 2}, {3, 4, 5, 6})})),
      "column 'b': shape [2, 2] is not a column");
  has(ColumnError(Body({a, a, color, b})), "column 'a' is given twice");
  has(ColumnError(Body({a, color, Col("b", "INT32", {2}, {3, 4.5})})), "expected an integer");
  // A request mixing the tensor and a column: the tensor form, whose error offers the columns.
  has(ColumnError(Body(
          {{{"name", "x"}, {"datatype", "FP32"}, {"shape", {2, 3}}, {"data", {1, 2, 3, 4, 5, 6}}},
           a})),
      "input 'a' is not an input of the model (it has 'x'); or send every input as a column, one "
      "per feature: 'a', 'color', 'b'");
  // Derived outputs are asked for by name; others are refused with what exists.
  json ok = Body({a, color, b});
  ok["outputs"] = {{{"name", "class"}}, {{"name", "y"}}, {{"name", "probabilities"}}};
  auto r = ParseColumns(ok);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->derived_outputs(), std::vector<std::string>({"class", "probabilities"}));
  ok["outputs"] = {{{"name", "klass"}}};
  has(ColumnError(ok),
      "output 'klass' is not an output of the model; derived outputs: 'probabilities', 'class', "
      "'class_id'");
  // Without extras, derived names are unknown outputs, as before.
  json plain = Body({X({1, 2}, {1, 2}), Mask({1}, {true})});
  plain["outputs"] = {{{"name", "class"}}};
  has(Error(plain), "output 'class' is not an output of the model");
}

TEST(V2Codec, DerivedOutputsAreEncodedAsAskedIncludingBytes) {
  V2ModelExtras x = Extras();
  float y[6] = {1, 3, 2, 0.5f, -1, 0};
  std::vector<Tensor> outs = {Tensor::from_f32({2, 3}, y)};
  auto d = v2_derived_outputs(x, {"class", "probabilities", "class_id"}, outs);
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  ASSERT_EQ(d->size(), 3u);
  EXPECT_EQ((*d)[0].bytes, std::vector<std::string>({"dog", "cat"}));
  const float* pr = (*d)[1].tensor.data_as<float>();
  double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(pr[1], std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(pr[3] + pr[4] + pr[5], 1.0, 1e-6);
  EXPECT_EQ((*d)[2].tensor.data_as<int64_t>()[1], 0);

  V2InferRequest req;
  req.outputs = {{"class", false, true}, {"y", false, false}, {"class_id", true, true}};
  auto e = encode_v2_infer_response("m", "1", req, kRowOut, outs, *d);
  ASSERT_TRUE(e.json_length.has_value());
  json h = json::parse(e.body.substr(0, *e.json_length));
  ASSERT_EQ(h["outputs"].size(), 3u);
  EXPECT_EQ(h["outputs"][0]["name"], "class");
  EXPECT_EQ(h["outputs"][0]["datatype"], "BYTES");
  EXPECT_EQ(h["outputs"][0]["shape"], json({2}));
  EXPECT_EQ(h["outputs"][0]["data"], json({"dog", "cat"}));
  EXPECT_EQ(h["outputs"][1]["name"], "y");
  EXPECT_EQ(h["outputs"][2]["parameters"]["binary_data_size"], 16);

  // Binary BYTES round trip: the response's class names, sent back as a BYTES column.
  req.outputs = {{"class", true, true}};
  auto b = encode_v2_infer_response("m", "1", req, kRowOut, outs, *d);
  ASSERT_TRUE(b.json_length.has_value());
  std::string bytes = b.body.substr(*b.json_length);
  EXPECT_EQ(bytes, BytesElement("dog") + BytesElement("cat"));
  EXPECT_EQ(
      json::parse(b.body.substr(0, *b.json_length))["outputs"][0]["parameters"]["binary_data_size"],
      bytes.size());

  // Binary classification: one logit per row gives [N, 2] probabilities.
  ModelMetadata m = x.metadata;
  m.task = "binary_classification";
  m.class_names = {"no", "yes"};
  V2ModelExtras bx = v2_model_extras(m, kRowIn, {{"logit", DType::kF32, {-1, 1}}});
  float l[2] = {2, -1};
  auto bd = v2_derived_outputs(bx, {"probabilities", "class"}, {Tensor::from_f32({2, 1}, l)});
  ASSERT_TRUE(bd.ok()) << bd.status().to_string();
  EXPECT_EQ((*bd)[0].tensor.shape(), Shape({2, 2}));
  EXPECT_NEAR((*bd)[0].tensor.data_as<float>()[1], 1 / (1 + std::exp(-2.0)), 1e-6);
  EXPECT_EQ((*bd)[1].bytes, std::vector<std::string>({"yes", "no"}));
}

}  // namespace
}  // namespace dlsys::serve
