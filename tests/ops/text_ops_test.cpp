// Checks of TfIdfVectorizer beyond the conformance cases (all TF mode): IDF and TFIDF with
// weights, skips, and the errors for an inconsistent pool. Expectations are counted by hand.
#include <gtest/gtest.h>

#include <functional>
#include <map>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "testing/onnx_builder.h"
#include "testing/run_node.h"

namespace dlsys {
namespace {

using In = testing::NodeInput;
using testing::run_node;
void tfidf_attrs(onnx::NodeProto* n, const std::string& mode, int64_t skip,
                 const std::vector<int64_t>& counts) {
  auto* a = n->add_attribute();
  a->set_name("mode");
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(mode);
  testing::OnnxBuilder::attr_int(n, "min_gram_length", 1);
  testing::OnnxBuilder::attr_int(n, "max_gram_length", 2);
  testing::OnnxBuilder::attr_int(n, "max_skip_count", skip);
  testing::OnnxBuilder::attr_ints(n, "ngram_counts", counts);
  testing::OnnxBuilder::attr_ints(n, "ngram_indexes", {0, 1, 2, 3});
  testing::OnnxBuilder::attr_ints(n, "pool_int64s",
                                  {1, 2, 1, 2, 2, 1});  // unigrams 1, 2; bigrams (1,2), (2,1)
  a = n->add_attribute();
  a->set_name("weights");
  a->set_type(onnx::AttributeProto::FLOATS);
  for (float w : {0.5f, 2.f, 3.f, 4.f}) a->add_floats(w);
}

TEST(TextOps, TfIdfModesWeightsAndSkips) {
  // Tokens 1 2 1 3 2 1: unigram 1 x3, 2 x2; adjacent pairs (1,2) x1, (2,1) x2; pairs one apart
  // (1,1) (2,3) (1,2) (3,1) add one (1,2).
  Tensor x = testing::make_tensor(DType::kI32, {6}, std::vector<int32_t>{1, 2, 1, 3, 2, 1});
  struct Case {
    std::string mode;
    int64_t skip;
    std::vector<float> want;
  };
  for (const Case& c : {Case{"TF", 0, {3, 2, 1, 2}}, Case{"TF", 1, {3, 2, 2, 2}},
                        Case{"IDF", 0, {0.5f, 2, 3, 4}}, Case{"TFIDF", 1, {1.5f, 4, 6, 8}}}) {
    std::vector<Tensor> out;
    Status st = run_node(
        "TfIdfVectorizer", {{"x", x}}, 1,
        [&](onnx::NodeProto* n) {
          tfidf_attrs(n, c.mode, c.skip, {0, 2});
        },
        &out);
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(out[0].shape(), Shape{4});
    for (int j = 0; j < 4; ++j)
      EXPECT_FLOAT_EQ(out[0].data_as<float>()[j], c.want[j]) << c.mode << " skip " << c.skip;
  }
}

TEST(TextOps, TfIdfPoolThatDoesNotSplitIsNamed) {
  std::vector<Tensor> out;
  // ngram_counts {0, 3}: three unigrams, then three values that are not whole bigrams.
  Status st = run_node(
      "TfIdfVectorizer",
      {{"x", testing::make_tensor(DType::kI64, {3}, std::vector<int64_t>{1, 2, 3})}}, 1,
      [&](onnx::NodeProto* n) {
        tfidf_attrs(n, "TF", 0, {0, 3});
      },
      &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("(TfIdfVectorizer): ngram_counts [0, 3] do not split the pool"),
            std::string::npos)
      << st.to_string();
}

}  // namespace
}  // namespace dlsys
