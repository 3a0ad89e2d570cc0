// Checkpoints of a training run: everything needed to continue it exactly where it stopped.
//
// Layout, under the run directory:
//   checkpoints/step-N/weights.safetensors  parameters ("param/<name>"), running statistics
//                                           ("buffer/<name>") and optimizer state
//                                           ("optim/<slot>"), metadata format=dlsys-checkpoint-1
//   checkpoints/step-N/state.json           {"step", "loader": {"epoch", "batch"},
//                                            "optimizer_steps", "spec_sha256"}
//   checkpoints/latest                      the name of the newest complete folder ("step-N")
//
// Crash-safe protocol (once `latest` exists, a SIGKILL at any instant leaves it naming a complete
// checkpoint):
//   1. both files are written into a fresh checkpoints/.tmp-<random> folder, each atomically
//      (temporary file, fsync, rename: core/file_util.h);
//   2. the folder is renamed to step-N. When a step-N is already there (the same step written
//      again: a run started over in the same directory, or one resumed from its final
//      checkpoint), it is first renamed to step-N.old and removed after; a reader that finds
//      the folder `latest` names missing reads its .old twin, which is complete;
//   3. `latest` is rewritten atomically to name step-N;
//   4. the policy keeps the newest kKeepCheckpoints step-N folders (by step number) and removes
//      the older ones, any .tmp-* folder a killed run left behind (untouched for 10 minutes: a
//      recent one may be another writer's, the rank 0 of a group re-formed over a shared
//      folder) and any step-N.old whose step-N exists; it never removes the folder `latest`
//      names.
// Until step 3 completes, `latest` names the previous checkpoint, which is still complete. A
// reader trusts only `latest`, never a folder listing, so a half-written folder is never read.
//
// Resuming needs no RNG state: the loader's order depends only on seed and epoch, and dropout
// masks only on seed and step (src/train/README.md).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/loader.h"
#include "tensor/tensor.h"
#include "train/optimizer.h"

namespace dlsys::train {

// How many checkpoint folders a run keeps (the newest ones).
inline constexpr int kKeepCheckpoints = 3;

// The contents of one checkpoint.
struct Checkpoint {
  int64_t step = 0;               // optimizer steps completed
  data::LoaderPosition position;  // the batch the run reads next
  int64_t optimizer_steps = 0;    // the optimizer's own step count (bias correction)
  std::string spec_sha256;        // the spec (and overrides) the run was started with
  std::string extend_sha256;      // the same without the number of epochs ("" when its schedule
                                  // depends on it); older checkpoints have none
  std::map<std::string, Tensor> params;           // trained parameters by name
  std::map<std::string, Tensor> buffers;          // running statistics by name
  std::map<std::string, Tensor> optimizer_state;  // Optimizer::state()
  std::string folder;  // read_latest_checkpoint: the folder it was read from (for messages)
};

// Writes `c` as `run_dir`/checkpoints/step-<c.step> by the protocol above, names it in `latest`
// and applies the keep-newest policy. The tensors are read, not kept. On error the previous
// `latest` stays valid.
Status write_checkpoint(const std::string& run_dir, const Checkpoint& c);

// Reads the checkpoint `run_dir`/checkpoints/latest names. NotFound when the run has none
// (the message says to start without --resume); Invalid when a file is malformed.
Result<Checkpoint> read_latest_checkpoint(const std::string& run_dir);

// What a resumed run restores into: the trainer's live tensors by name, and its optimizer.
struct ResumeTarget {
  std::map<std::string, Tensor*> params;   // each must be in the checkpoint, same shape
  std::map<std::string, Tensor*> buffers;  // each must be in the checkpoint, same shape
  Optimizer* optimizer = nullptr;
};

// Reads the latest checkpoint of `run_dir`, checks that it was written for `spec_sha256` (or,
// when `extend_sha256` is not empty, for the same spec with another number of epochs: a run
// continued for longer, as a promoted search trial is), copies
// its parameters and running statistics into the tensors of `target` (same shapes, in place, so
// views of them stay valid) and loads the optimizer's state. Returns the checkpoint (its step and
// loader position say where to continue). Errors name the run directory or the checkpoint
// folder and the missing or mismatched tensor; on error `target` may be partly restored.
Result<Checkpoint> resume_from_checkpoint(const std::string& run_dir,
                                          const std::string& spec_sha256,
                                          const ResumeTarget& target,
                                          const std::string& extend_sha256 = "");

// The keep-newest policy alone: removes all but the newest `keep` step-* folders of
// `run_dir`/checkpoints (by step number) and every .tmp-* folder. write_checkpoint calls it.
Status prune_checkpoints(const std::string& run_dir, int keep = kKeepCheckpoints);

}  // namespace dlsys::train
