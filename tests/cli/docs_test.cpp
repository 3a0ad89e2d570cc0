// The reference docs against the code they describe: every field the spec parsers accept has a
// row in docs/spec.md, and `dlsys train --help` points there.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "serve/deployment_config.h"
#include "train/spec.h"

namespace dlsys {
namespace {

// The file's text, or "" when it cannot be read (the callers assert it is not empty).
std::string read_text(const std::string& path) {
  auto t = read_file(path);
  return t.ok() ? *t : std::string();
}

// The part of `doc` from the line `heading` to the next heading of the same level ("## ").
std::string section(const std::string& doc, const std::string& heading) {
  size_t at = doc.find("\n" + heading + "\n");
  if (at == std::string::npos) return "";
  size_t end = doc.find("\n## ", at + heading.size() + 1);
  return doc.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

// The fields of `fields` without a table row "| `FIELD` |" in `text`.
std::vector<std::string> undocumented(const std::string& text,
                                      const std::vector<std::string>& fields) {
  std::vector<std::string> out;
  for (const std::string& f : fields)
    if (text.find("\n| `" + f + "` |") == std::string::npos) out.push_back(f);
  return out;
}

TEST(Spec, EveryAcceptedFieldIsDocumented) {
  std::string doc = read_text(std::string(DLSYS_SOURCE_DIR) + "/docs/spec.md");
  ASSERT_FALSE(doc.empty()) << "docs/spec.md is missing";
  std::string training = section(doc, "## Training spec");
  std::string deployment = section(doc, "## Deployment spec");
  ASSERT_FALSE(training.empty()) << "docs/spec.md has no '## Training spec' section";
  ASSERT_FALSE(deployment.empty()) << "docs/spec.md has no '## Deployment spec' section";

  std::vector<std::string> train_fields = train::train_spec_fields();
  std::vector<std::string> deploy_fields = serve::deployment_config_fields();
  // The lists are the parsers' own: a few fields every version has, as a check on the lists.
  for (const char* f : {"name", "data.feature_scale", "train.optimizer.lr",
                        "model.layers[].linear.out", "model.layers[].relu"})
    EXPECT_NE(std::find(train_fields.begin(), train_fields.end(), f), train_fields.end()) << f;
  for (const char* f : {"config.max_batch", "config.canary.weight", "config.shadow.version"})
    EXPECT_NE(std::find(deploy_fields.begin(), deploy_fields.end(), f), deploy_fields.end()) << f;

  for (const std::string& f : undocumented(training, train_fields))
    ADD_FAILURE() << "training spec field '" << f << "' is accepted by src/train/spec.cpp but has "
                  << "no row \"| `" << f << "` |\" under '## Training spec' in docs/spec.md";
  for (const std::string& f : undocumented(deployment, deploy_fields))
    ADD_FAILURE() << "deployment setting '" << f << "' is accepted by "
                  << "src/serve/deployment_config.cpp but has no row \"| `" << f
                  << "` |\" under '## Deployment spec' in docs/spec.md";
}

// Where a newcomer looks first: `dlsys train --help` names the reference.
TEST(Spec, TrainHelpPointsAtTheReference) {
  FILE* p = popen((std::string(DLSYS_BIN) + " train --help 2>&1").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << out;
  EXPECT_NE(out.find("docs/spec.md"), std::string::npos) << out;
}

}  // namespace
}  // namespace dlsys
