// Upgrades ONNX models at default-domain opsets 7-12 to opset 13 on import, with ONNX's own
// version converter (onnx::version_conversion in libonnx) after shape inference, plus dlsys's
// own rewrite of Softmax / LogSoftmax / Hardmax (whose axis changed meaning at 13) where the
// converter asserts (input of unknown rank) or is wrong (Hardmax it treats as unchanged), and
// Pad's default `value` written out (the converter requires it).
#pragma once

#include <string>

#include "core/status.h"

namespace onnx {
class ModelProto;
}  // namespace onnx

namespace dlsys {

// The oldest default-domain opset that upgrade_onnx_opset converts.
constexpr int kMinConvertibleOpset = 7;

// Converts `m`, which passed the ONNX checker at its default-domain opset `from`
// (kMinConvertibleOpset <= from < kMinOpset), to opset kMinOpset in place. Other domains in
// opset_import are kept as they are. Never aborts: a converter failure becomes an Unsupported
// error that names the node, its op and both opsets when one node is the cause (`where` names
// the model in messages). On error `m` is left unspecified.
Status upgrade_onnx_opset(onnx::ModelProto* m, int from, const std::string& where);

}  // namespace dlsys
